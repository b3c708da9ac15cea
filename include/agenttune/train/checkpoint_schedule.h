#pragma once
// When the trainer saves: every checkpoint.interval steps, at train.max_steps, when a stop signal
// ends the run and when --exit-after-steps does. Never during a streak of bad steps (a save could
// prune the good checkpoint a rollback needs) and never of non-finite weights.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "agenttune/train/train_config.h"
#include "agenttune/train/trainer.h"

namespace agenttune {

struct TrainRun;

struct CheckpointScheduleOptions {
  int64_t interval = 1000;      // checkpoint.interval
  int64_t max_steps = 1;        // train.max_steps (resolved): the last step is always saved
  int64_t exit_after_steps = 0; // --exit-after-steps; 0 = run to max_steps
};
CheckpointScheduleOptions checkpoint_schedule_options(const TrainConfig& cfg, const TrainOptions& opts);

// How the loop goes on after a step's checkpoint (a stop signal wins over --exit-after-steps).
enum class RunEnd { Continue, ExitAfterSteps, Stopped };

// Why a step's checkpoint is or is not written.
enum class SaveDecision { NotDue, StreakOpen, WeightsNonFinite, Save };

class CheckpointSchedule {
 public:
  explicit CheckpointSchedule(const CheckpointScheduleOptions& o) : o_(o) {}
  // After completed step `step`; `stopping`: the ranks voted to stop.
  bool due(int64_t step, bool stopping) const;
  RunEnd end_after(int64_t step, bool stopping) const;
  // A due save waits while a bad streak is open and refuses weights that are not finite
  // (`weights_finite` is asked only when everything else allows the save: it costs a pass).
  SaveDecision decide(int64_t step, bool stopping, int64_t bad_streak,
                      const std::function<bool()>& weights_finite) const;

 private:
  CheckpointScheduleOptions o_;
};

// Saves run's state when the schedule says so (collective), and logs why not when it was due
// but refused; a refusal for non-finite weights lengthens the bad streak. Returns how the loop goes on.
RunEnd save_if_due(TrainRun& run, const CheckpointSchedule& schedule, bool stopping);

// The last good checkpoint as the log names it ("(none yet)" before the first).
std::string last_good_name(const std::filesystem::path& last_checkpoint);

}  // namespace agenttune
