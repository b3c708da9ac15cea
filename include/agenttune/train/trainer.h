#pragma once
// A training run: build_run (train/train_run.h) builds everything from the config, then one loop
// of optimizer steps over named components: the step (train/step.h), the bad-step policy
// (train/bad_step.h), the checkpoint schedule (train/checkpoint_schedule.h), evaluation, and the
// metrics row and progress line (train/run_report.h). Knows nothing of file formats.
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
