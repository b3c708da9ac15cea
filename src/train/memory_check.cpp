#include "agenttune/train/memory_check.h"

#include <c10/core/Allocator.h>
#include <c10/core/CachingDeviceAllocator.h>

#include <limits>

#include "agenttune/train/data_resolution.h"
#include "agenttune/train/run_options.h"
#include "agenttune/util/error.h"
#include "agenttune/util/host_memory.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace {

double gib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }

}  // namespace

std::optional<DeviceMemory> device_memory(c10::Device device) {
  if (device.is_cpu()) return std::nullopt;
  auto* allocator = dynamic_cast<c10::DeviceAllocator*>(c10::GetAllocator(device.type()));
  if (allocator == nullptr) return std::nullopt;
  try {
    const auto [free, total] = allocator->getMemoryInfo(device.index() < 0 ? 0 : device.index());
    return DeviceMemory{static_cast<int64_t>(free), static_cast<int64_t>(total)};
  } catch (const c10::NotImplementedError&) {
    return std::nullopt;
  }
}

std::vector<std::string> alternative_overrides(const parallel::MemoryPlanInput& from,
                                               const parallel::MemoryPlanInput& to) {
  std::vector<std::string> out;
  if (to.recompute != from.recompute) out.push_back("model.activation_checkpointing=" + enum_name(to.recompute));
  if (to.offload != from.offload) out.push_back("dist.offload=" + enum_name(to.offload));
  if (to.micro_batch != from.micro_batch) out.push_back(fmt::format("train.micro_batch_size={}", to.micro_batch));
  return out;
}

std::string plan_table(const std::vector<PlanRow>& rows, const parallel::MemoryLimits& limits) {
  std::string out = fmt::format(
      "| {:<48} | {:>4} | {:>5} | {:>5} | {:>9} | {:>9} | {:>6} | {:>6} | {:>6} | {:>6} | {:>6} | {:>9} | {:>4} |\n",
      "plan", "gpus", "micro", "accum", "recompute", "offload", "params", "grads", "optim", "activ", "total",
      "host/node", "fits");
  out += "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|\n";
  for (const auto& r : rows)
    out += fmt::format(
        "| {:<48} | {:>4} | {:>5} | {:>5} | {:>9} | {:>9} | {:>6.2f} | {:>6.2f} | {:>6.2f} | {:>6.2f} | {:>6.2f} | "
        "{:>9.2f} | {:>4} |\n",
        r.label, r.input.world, r.input.micro_batch, r.input.grad_accum, enum_name(r.input.recompute),
        enum_name(r.input.offload), gib(r.plan.params()), gib(r.plan.grads()), gib(r.plan.optimizer),
        gib(r.plan.activations_peak), gib(r.plan.total()),
        gib(parallel::host_bytes_needed(r.plan, r.input, limits)), parallel::fits(r.plan, r.input, limits) ? "yes" : "no");
  return out;
}

std::string describe_alternatives(const parallel::MemoryPlanInput& from,
                                  const std::vector<parallel::Alternative>& alternatives,
                                  const parallel::MemoryLimits& limits) {
  if (alternatives.empty())
    return "no change of recompute, offload, micro-batch or GPU count (keeping the global batch) fits\n";
  std::vector<PlanRow> rows;
  for (const auto& a : alternatives) {
    std::string label;
    for (const auto& o : alternative_overrides(from, a.input)) label += (label.empty() ? "--set " : " --set ") + o;
    if (a.world != from.world) label += fmt::format("{}on {} GPUs", label.empty() ? "" : " ", a.world);
    rows.push_back({label, a.input, a.plan});
  }
  return "changes that fit, least intrusive first (the global batch kept by accumulation):\n" + plan_table(rows, limits);
}

parallel::MemoryLimits this_machine_limits(c10::Device device) {
  parallel::MemoryLimits limits;
  const auto host = available_host_bytes();
  limits.host_bytes = host ? static_cast<int64_t>(*host) : -1;
  if (device.is_cpu()) {
    limits.device_is_host = true;
  } else if (const auto d = device_memory(device)) {
    limits.device_bytes = d->free;
  } else {
    log::warn("memory check: {}'s allocator does not report its free memory; checking host memory only",
              device.str());
    limits.device_bytes = std::numeric_limits<int64_t>::max();
  }
  return limits;
}

void check_memory(const TrainConfig& cfg, const LlamaConfig& model, const parallel::WorldInfo& world,
                  parallel::ProcessGroup& dist) {
  const MemoryCheck mode = cfg.train.memory_check;
  if (mode == MemoryCheck::Off) return;
  const auto in = memory_plan_input(cfg, model, cfg.dist.strategy, dist.world_size(), world.local_world_size);
  const auto plan = parallel::plan_memory(in);
  const auto limits = this_machine_limits(dist.device());
  const bool fit = parallel::fits(plan, in, limits);
  const int64_t host = parallel::host_bytes_needed(plan, in, limits);
  const int ranks = parallel::ranks_per_node(in);
  if (limits.device_is_host)
    log::info("memory plan: {:.2f} GiB of host memory for {} rank(s) on this node: {}", gib(host), ranks,
              fit ? "fits" : "does not fit");
  else
    log::info("memory plan: {:.2f} GiB on {} per rank, {:.2f} GiB of host memory for {} rank(s) on this node: {}",
              gib(plan.total()), dist.device().str(), gib(host), ranks, fit ? "fits" : "does not fit");
  std::string report;
  if (!fit) {
    const std::string have =
        limits.device_is_host
            ? fmt::format("{:.0f}% of the host's {:.2f} GiB available", 100 * parallel::kUsableFraction,
                          gib(limits.host_bytes))
            : fmt::format("{:.0f}% of {}'s {:.2f} GiB free{}", 100 * parallel::kUsableFraction, dist.device().str(),
                          gib(limits.device_bytes),
                          limits.host_bytes < 0 ? std::string()
                                                : fmt::format(" and of the host's {:.2f} GiB available",
                                                              gib(limits.host_bytes)));
    report = fmt::format(
        "the memory plan of this run does not fit {} (train.memory_check: {}; `agenttune plan` makes the same plan):\n"
        "{}{}",
        have, enum_name(mode), plan_table({{"this run", in, plan}}, limits),
        describe_alternatives(in, parallel::fitting_alternatives(in, global_batch_sequences(cfg), limits), limits));
  }
  if (mode == MemoryCheck::Warn) {
    if (!fit) log::warn("{}", report);
    return;
  }
  // A rank whose device fits must not go on into a collective that a refusing rank never joins.
  const bool any_refused = dist.all_reduce(fit ? 0.0 : 1.0, parallel::Reduce::Max, "memory check") > 0;
  if (!fit) throw Error(report);
  if (any_refused) fail("memory check: another rank's plan does not fit its memory (its log says why)");
}

}  // namespace agenttune
