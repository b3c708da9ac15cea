// agenttune plan --config FILE --gpus N[,N...]: per-GPU memory, communication and a step-time
// lower bound for the config's model and training shape, before renting the GPUs.
#include <filesystem>
#include <iostream>

#include "agenttune/config/load.h"
#include "agenttune/parallel/memory_plan.h"
#include "agenttune/model/flops.h"
#include "agenttune/train/data_resolution.h"
#include "agenttune/train/memory_check.h"
#include "agenttune/train/model_fit.h"
#include "agenttune/train/run_options.h"
#include "agenttune/train/train_config.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "commands.h"

namespace agenttune::cli {

namespace {

namespace fs = std::filesystem;

double gib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }

// A plan is often made before the model is downloaded: model.init_from's folder decides when it is
// here (as in train, a model.shape beside it must be equal), model.shape otherwise.
LlamaConfig planned_architecture(const TrainConfig& cfg, const std::string& config_file) {
  const auto& dir = cfg.model.init_from;
  if (dir.empty() || fs::is_directory(dir)) return fitted_architecture(cfg);
  if (!cfg.model.shape)
    fail("{}: model.init_from {} is not here and model.shape is not set; plan needs one of them for the "
         "model's architecture",
         config_file, dir.string());
  log::info("model.init_from {} is not here: planning for model.shape", dir.string());
  return *cfg.model.shape;
}

// The plan's total per GPU with the config's model.adapter settings (rank, targets, ...) as `kind`.
int64_t adapted_total(parallel::MemoryPlanInput in, AdapterKind kind, const parallel::Hardware& hw) {
  in.adapter.kind = kind;
  return parallel::plan_memory(in, hw).total();
}

}  // namespace

Command plan_command() {
  struct Args {
    std::string config;
    std::vector<std::string> overrides, strategies;
    std::vector<int> gpus;
    double gpu_memory_gib = 80, host_memory_gib = 0, link_gbps = 400, nvlink_gbs = 450, peak_tflops = 989;
    int gpus_per_node = 8;
  };
  auto a = std::make_shared<Args>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("plan", "Per-GPU memory, communication and step-time bound of a train config");
    s->add_option("--config", a->config, "train YAML (model, data.seq_len, micro-batch, dist.strategy)")
        ->required()->check(CLI::ExistingFile);
    s->add_option("--set", a->overrides, "override a config key: a.b=value (repeatable)");
    s->add_option("--gpus", a->gpus, "world size(s), e.g. 8,32,128")->required()->delimiter(',')
        ->check(CLI::PositiveNumber);
    s->add_option("--strategy", a->strategies, "strategies to compare (default: dist.strategy)")->delimiter(',')
        ->check(CLI::IsMember(enum_names<parallel::ShardStrategy>()));
    s->add_option("--gpu-memory", a->gpu_memory_gib, "GiB per GPU that the plan must fit in")->check(CLI::PositiveNumber);
    s->add_option("--host-memory", a->host_memory_gib,
                  "GiB of host memory per node that offloaded state must fit in (default: not checked)")
        ->check(CLI::PositiveNumber);
    s->add_option("--gpus-per-node", a->gpus_per_node, "GPUs sharing NVLink (and the hybrid shard group)")
        ->check(CLI::PositiveNumber);
    s->add_option("--link-gbps", a->link_gbps, "inter-node network per GPU, Gbit/s")->check(CLI::PositiveNumber);
    s->add_option("--nvlink-gbs", a->nvlink_gbs, "intra-node bandwidth per GPU, GB/s")->check(CLI::PositiveNumber);
    s->add_option("--peak-tflops", a->peak_tflops, "dense peak per GPU in the compute dtype")->check(CLI::PositiveNumber);
    return s;
  };
  c.run = [a] {
    auto cfg = load_config<TrainConfig>(a->config, a->overrides);
    const LlamaConfig model = planned_architecture(cfg, a->config);
    if (a->strategies.empty()) a->strategies = {enum_name(cfg.dist.strategy)};
    const int64_t seqs = global_batch_sequences(cfg);
    parallel::Hardware hw{a->peak_tflops, a->nvlink_gbs, a->link_gbps / 8.0};
    parallel::MemoryLimits limits;
    limits.device_bytes = static_cast<int64_t>(a->gpu_memory_gib * (1 << 30));
    limits.host_bytes = a->host_memory_gib > 0 ? static_cast<int64_t>(a->host_memory_gib * (1 << 30)) : -1;

    std::cout << fmt::format(
        "model: L={} D={} F={} heads={}/{} V={} ({:.2f}B params); seq {} x micro-batch {}, {}, recompute {}, "
        "offload {}, global batch {} sequences, adapter {}\nmemory in GiB per GPU (host: offloaded state per GPU); fits = "
        "total <= {:.0f}% of {} GiB (the rest for the CUDA context, workspaces, fragmentation){}\nbound = "
        "max(compute at {} TFLOP/s, comm at {} GB/s NVLink / {} Gb/s network), per optimizer step\nLoRA / QLoRA: "
        "the total per GPU with model.adapter.kind lora / qlora (rank {}, {} target modules), all else the same\n\n",
        model.num_hidden_layers, model.hidden_size, model.intermediate_size, model.num_attention_heads,
        model.num_key_value_heads, model.vocab_size, count_parameters(model) / 1e9, cfg.data.seq_len,
        cfg.train.micro_batch_size, dtype_name(cfg.model.compute_dtype), enum_name(cfg.model.activation_checkpointing),
        enum_name(cfg.dist.offload), seqs, enum_name(cfg.model.adapter.kind), 100 * parallel::kUsableFraction,
        a->gpu_memory_gib,
        a->host_memory_gib > 0
            ? fmt::format(" and the host state of a node's GPUs <= {:.0f}% of {} GiB", 100 * parallel::kUsableFraction,
                          a->host_memory_gib)
            : std::string(),
        a->peak_tflops, a->nvlink_gbs, a->link_gbps, cfg.model.adapter.rank, cfg.model.adapter.target_modules.size());
    std::cout << fmt::format("| {:<13} | {:>4} | {:>5} | {:>6} | {:>6} | {:>6} | {:>6} | {:>6} | {:>6} | {:>4} | {:>9} | {:>9} | {:>8} | {:>8} | {:>9} | {:>6} | {:>6} |\n",
                             "strategy", "gpus", "accum", "params", "grads", "optim", "activ", "total", "host", "fits",
                             "comm GB", "compute s", "comm s", "bound s", "tok/s/GPU", "LoRA", "QLoRA");
    std::cout << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
    std::vector<std::pair<std::string, parallel::MemoryPlanInput>> too_large;
    for (const auto& name : a->strategies)
      for (int world : a->gpus) {
        const auto in =
            memory_plan_input(cfg, model, parallel::parse_shard_strategy(name), world, a->gpus_per_node);
        if (!step_batch(cfg, world).exact)
          log::warn("{} GPUs: the global batch of {} sequences is not a multiple of {} x {}; train would refuse it",
                    world, seqs, in.micro_batch, world);
        auto p = parallel::plan_memory(in, hw);
        const bool fit = parallel::fits(p, in, limits);
        if (!fit) too_large.emplace_back(fmt::format("{} on {} GPU(s)", name, world), in);
        const double tokens = static_cast<double>(in.micro_batch * in.seq_len * in.grad_accum);
        std::cout << fmt::format(
            "| {:<13} | {:>4} | {:>5} | {:>6.2f} | {:>6.2f} | {:>6.2f} | {:>6.2f} | {:>6.2f} | {:>6.2f} | {:>4} | "
            "{:>9.1f} | {:>9.3f} | {:>8.3f} | {:>8.3f} | {:>9.0f} | {:>6.2f} | {:>6.2f} |\n",
            name, world, in.grad_accum, gib(p.params()), gib(p.grads()), gib(p.optimizer), gib(p.activations_peak),
            gib(p.total()), gib(p.host), fit ? "yes" : "no", (p.intra_bytes + p.inter_bytes) / 1e9, p.compute_s,
            p.comm_s, p.step_bound_s(), tokens / p.step_bound_s(), gib(adapted_total(in, AdapterKind::Lora, hw)),
            gib(adapted_total(in, AdapterKind::Qlora, hw)));
      }
    for (const auto& [what, in] : too_large)
      std::cout << fmt::format("\n{} does not fit: ", what)
                << describe_alternatives(in, parallel::fitting_alternatives(in, seqs, limits, hw), limits);
    return 0;
  };
  return c;
}

}  // namespace agenttune::cli
