#pragma once
// Everything one training run holds, built from the config in one place (build_run): the resolved
// config, the process group, the locked checkpoint store, the data stream, the sharded model with
// its optimizer and schedule, and where a resume left off. train() then only loops over steps.
#include <memory>

#include <nlohmann/json.hpp>

#include "agenttune/data/mixture.h"
#include "agenttune/model/llama.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/train/lr_schedule.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/run_lock.h"
#include "agenttune/train/run_options.h"
#include "agenttune/train/train_config.h"
#include "agenttune/train/train_progress.h"
#include "agenttune/train/trainer.h"

namespace agenttune {

// Members in build order, so that they are torn down in reverse (the sharded model before the
// process group it talks through, the run lock after the last save).
struct TrainRun {
  // Resolved: trained-token weights, max_steps from epochs, model.shape = the architecture trained.
  TrainConfig cfg;
  std::unique_ptr<parallel::ProcessGroup> dist;
  bool main = false;  // rank 0: the one voice that writes config.yaml, metrics and the log
  std::unique_ptr<CheckpointStore> store;
  std::unique_ptr<RunLock> lock;  // held by rank 0 only
  nlohmann::json config_json;     // stored in every checkpoint: the resolved YAML and the tokenizer
  std::unique_ptr<Mixture> data;
  LlamaForCausalLM model{nullptr};  // host-side module; its config has the data's grown vocabulary
  std::unique_ptr<parallel::ShardedModel> sharded;
  std::unique_ptr<AdamW> opt;
  LrSchedule sched;
  StepBatch batch;
  TrainProgress prog;
  TrainResult result;  // start_step and last_checkpoint are set here; the loop fills the rest
};

// Collective: every rank builds its part; rank 0 takes the run lock and writes config.yaml. With
// opts.resume, the state of that checkpoint (or the newest, for "auto") is loaded.
TrainRun build_run(const TrainConfig& config, const TrainOptions& opts);

}  // namespace agenttune
