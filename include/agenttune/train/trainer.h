#pragma once
// The training loop: the story of one optimizer step, repeated. Composes the model, the data
// mixture, AdamW, the schedule, checkpoints and metrics; knows nothing of file formats.
#include <filesystem>
#include <string>
#include <vector>

#include "agenttune/train/train_config.h"

namespace agenttune {

struct TrainOptions {
  std::string resume;  // "" (fresh), "auto" (newest complete checkpoint, if any) or a folder
  bool progress = true;
  // Checkpoint and return once this many steps are complete (0 = run to train.max_steps), without
  // changing the schedule: for time-boxed cluster jobs that continue with --resume auto.
  int64_t exit_after_steps = 0;
};

struct TrainResult {
  int64_t start_step = 0;
  int64_t final_step = 0;
  std::vector<double> losses;  // per step run in this process
  bool interrupted = false;    // stopped by SIGTERM/SIGINT after checkpointing
  std::filesystem::path last_checkpoint;
};

TrainResult train(const TrainConfig& cfg, const TrainOptions& opts);

// Exit code for a run stopped by a signal (after its checkpoint): 128 + SIGTERM, as shells do.
constexpr int kInterruptedExitCode = 143;

}  // namespace agenttune
