#pragma once
// The bad-step policy: which steps' updates are refused (a non-finite loss or grad norm, or a
// loss spike when train.spike_zscore is set), how long a streak of them may last
// (train.max_nonfinite_in_a_row), and what one does under train.on_nonfinite: skip the update,
// roll back to the last good checkpoint (at most train.max_rollbacks times to one), or stop.
// Every rank judges the same reduced numbers, so every rank takes the same path.
#include <filesystem>
#include <map>

#include "agenttune/train/loss_spike.h"
#include "agenttune/train/step.h"
#include "agenttune/train/train_config.h"
#include "agenttune/train/train_progress.h"

namespace agenttune {

struct TrainRun;

struct BadStepOptions {
  NonfiniteAction action = NonfiniteAction::Skip;
  int64_t max_in_a_row = 5;
  int64_t max_rollbacks = 5;
  double spike_zscore = 0;  // 0 = no spike detection
  int64_t spike_window = 128;
};
BadStepOptions bad_step_options(const TrainConfig& cfg);

class BadStepPolicy {
 public:
  // The spike detector resumes from `start`'s window, so a resumed run judges as an uninterrupted one.
  BadStepPolicy(const BadStepOptions& o, const TrainProgress& start);

  // train_step's judge: non-finite first, then a loss spike.
  StepJudgement judge(const StepOutcome& o) const;

  enum class Next { Go, RollBack };
  // After a judged step. A good one ends the streak and joins the spike window; a bad one
  // lengthens the streak and throws when the run must stop (on_nonfinite: stop, or the streak
  // reached max_in_a_row). RollBack: on_nonfinite is rollback and `last_good` exists.
  Next after_step(const StepOutcome& o, TrainProgress& prog, const std::filesystem::path& last_good);

  // Counts a rollback that reloaded `good` (the checkpoint of `step`); throws once they pass max_rollbacks.
  void count_rollback(int64_t step, const std::filesystem::path& good);
  // After a rollback: the reloaded checkpoint's spike window.
  void restore(const TrainProgress& back) { spikes_.restore(back.loss_window); }

 private:
  BadStepOptions o_;
  LossSpikeDetector spikes_;
  std::map<int64_t, int64_t> rollbacks_to_;  // checkpoint step -> rollbacks to it in this process
};

// train.on_nonfinite: rollback. Weights, optimizer, step and RNG return to run.result's last
// checkpoint; the data stream does not, so the windows that led to the bad step are skipped
// (Megatron re-runs the same data, llm.c skips one update; neither does both). Collective.
void roll_back(TrainRun& run, BadStepPolicy& policy);

}  // namespace agenttune
