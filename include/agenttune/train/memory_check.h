#pragma once
// train.memory_check: the run's memory plan (parallel/memory_plan.h, what `agenttune plan` prints)
// against what this machine has, before any weight is read. A run that cannot fit used to load its
// checkpoint and then die in CUDA's allocator while building AdamW; now it stops at once with the
// plan and the setting changes that would fit (more recompute, optimizer offload, a smaller
// micro-batch, more GPUs), which `agenttune plan --gpu-memory` shows as well.
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/parallel/memory_plan.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/train/train_config.h"

namespace agenttune {

// An accelerator's free and total bytes as its allocator reports them (c10::DeviceAllocator::
// getMemoryInfo: CUDA's is the driver's cudaMemGetInfo, the test suite's fake device its capacity
// less what is allocated); nullopt for the CPU and for a backend whose allocator does not say.
struct DeviceMemory {
  int64_t free = 0, total = 0;
};
std::optional<DeviceMemory> device_memory(c10::Device device);

// The `--set` overrides that turn the config planned as `from` into `to`, e.g.
// {"model.activation_checkpointing=full", "dist.offload=optimizer"}. A world size is no config key:
// the launcher sets it (plan_table shows it in the gpus column).
std::vector<std::string> alternative_overrides(const parallel::MemoryPlanInput& from,
                                               const parallel::MemoryPlanInput& to);

// One row of a plan table: a label (the changes that make it) and the plan.
struct PlanRow {
  std::string label;
  parallel::MemoryPlanInput input;
  parallel::MemoryPlan plan;
};
// A Markdown table of plans, GiB per rank (host: per node, for the ranks on it), with whether each
// fits `limits`.
std::string plan_table(const std::vector<PlanRow>& rows, const parallel::MemoryLimits& limits);
// The fitting alternatives of `from` as plan_table rows labelled with their `--set` overrides
// ("on N GPUs" for a world size), least intrusive first; a line saying so when none fits.
std::string describe_alternatives(const parallel::MemoryPlanInput& from,
                                  const std::vector<parallel::Alternative>& alternatives,
                                  const parallel::MemoryLimits& limits);

// The limits this rank runs under: the device's free memory (the host's available memory on the
// CPU, where device and offloaded state share it) and the host's available memory.
parallel::MemoryLimits this_machine_limits(c10::Device device);

// Plans `cfg` for this world with `model` (its architecture, the vocabulary grown for the data)
// and checks it against this_machine_limits(). When it does not fit: train.memory_check error
// throws agenttune::Error (exit code 2) with the plan's table and the fitting alternatives, warn
// logs them. Every rank learns whether any rank refused (one all-reduce), so none waits in a
// collective for a rank that stopped.
void check_memory(const TrainConfig& cfg, const LlamaConfig& model, const parallel::WorldInfo& world,
                  parallel::ProcessGroup& dist);

}  // namespace agenttune
