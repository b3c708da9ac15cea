#include "agenttune/train/checkpoint_schedule.h"

#include <ATen/ATen.h>

#include "agenttune/train/train_run.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace {

// A pass over the shards, with one flag reduced over the ranks.
bool weights_finite(parallel::ShardedModel& model, parallel::ProcessGroup& dist) {
  bool ok = true;
  for (const auto& [name, t] : model.shard_params()) ok = ok && at::isfinite(t).all().item<bool>();
  return dist.all_reduce(ok ? 1.0 : 0.0, parallel::Reduce::Min, "weights finite") > 0;
}

}  // namespace

CheckpointScheduleOptions checkpoint_schedule_options(const TrainConfig& cfg, const TrainOptions& opts) {
  return {cfg.checkpoint.interval, cfg.train.max_steps, opts.exit_after_steps};
}

bool CheckpointSchedule::due(int64_t step, bool stopping) const {
  return step % o_.interval == 0 || step == o_.max_steps || stopping || end_after(step, false) != RunEnd::Continue;
}

RunEnd CheckpointSchedule::end_after(int64_t step, bool stopping) const {
  if (stopping) return RunEnd::Stopped;
  return o_.exit_after_steps > 0 && step >= o_.exit_after_steps ? RunEnd::ExitAfterSteps : RunEnd::Continue;
}

SaveDecision CheckpointSchedule::decide(int64_t step, bool stopping, int64_t bad_streak,
                                        const std::function<bool()>& weights_finite) const {
  if (!due(step, stopping)) return SaveDecision::NotDue;
  if (bad_streak > 0) return SaveDecision::StreakOpen;
  return weights_finite() ? SaveDecision::Save : SaveDecision::WeightsNonFinite;
}

RunEnd save_if_due(TrainRun& run, const CheckpointSchedule& schedule, bool stopping) {
  TrainProgress& prog = run.prog;
  const auto decision = schedule.decide(prog.step, stopping, prog.nonfinite_in_a_row,
                                        [&] { return weights_finite(*run.sharded, *run.dist); });
  if (decision == SaveDecision::StreakOpen) {
    // The weights are those of the last good step, but the streak's outcome is open.
    log::warn("step {}: no checkpoint during a streak of {} bad step(s); the last good one is {}", prog.step,
              prog.nonfinite_in_a_row, last_good_name(run.result.last_checkpoint));
  } else if (decision == SaveDecision::WeightsNonFinite) {
    // A finite step can still overflow the weights in its update (a huge learning rate); the
    // next step's loss will say so, but a checkpoint of them must never be called good.
    ++prog.nonfinite_in_a_row;
    log::warn("step {}: the update left non-finite weights: not saved; the last good checkpoint is {}", prog.step,
              last_good_name(run.result.last_checkpoint));
  } else if (decision == SaveDecision::Save) {
    run.result.last_checkpoint =
        save_train_state(*run.store, *run.sharded, *run.opt, *run.data, prog, run.config_json, *run.dist);
  }
  return schedule.end_after(prog.step, stopping);
}

std::string last_good_name(const std::filesystem::path& last_checkpoint) {
  return last_checkpoint.empty() ? std::string("(none yet)") : last_checkpoint.string();
}

}  // namespace agenttune
