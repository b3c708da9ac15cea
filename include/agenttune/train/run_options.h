#pragma once
// From the train config to each component's options, one builder per component (as
// mixture_options in train/data_resolution.h is the data stream's): a knob is read in exactly one
// place, and `agenttune plan` and the trainer see the same settings.
#include "agenttune/parallel/memory_plan.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/lr_schedule.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/train_config.h"

namespace agenttune {

parallel::ProcessGroupOptions process_group_options(const TrainConfig& cfg);

parallel::ShardOptions shard_options(const TrainConfig& cfg);

AdamWOptions adamw_options(const TrainConfig& cfg);

LrSchedule lr_schedule(const TrainConfig& cfg);

// How the step's global batch splits over `world` ranks: the global batch is fixed by the config,
// the world size only changes how many micro-batches each rank runs.
struct StepBatch {
  int64_t micro_batches = 1;  // per rank per step
  int64_t sequences = 0;      // per step, all ranks
  bool exact = true;          // the global batch is a whole number of micro-batches x ranks
};
StepBatch step_batch(const TrainConfig& cfg, int world);

// What `agenttune plan` plans for `world` ranks under `strategy` (the config's own strategy, or
// one to compare): the same shard options and batch split the trainer would run with.
parallel::MemoryPlanInput memory_plan_input(const TrainConfig& cfg, const LlamaConfig& model,
                                            parallel::ShardStrategy strategy, int world, int gpus_per_node);

}  // namespace agenttune
