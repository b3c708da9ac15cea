#include "agenttune/train/bad_step.h"

#include "agenttune/train/checkpoint_schedule.h"
#include "agenttune/train/train_run.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace fs = std::filesystem;

BadStepOptions bad_step_options(const TrainConfig& cfg) {
  const TrainSection& t = cfg.train;
  return {t.on_nonfinite, t.max_nonfinite_in_a_row, t.max_rollbacks, t.spike_zscore, t.spike_window};
}

BadStepPolicy::BadStepPolicy(const BadStepOptions& o, const TrainProgress& start) : o_(o), spikes_(o.spike_window) {
  spikes_.restore(start.loss_window);
}

StepJudgement BadStepPolicy::judge(const StepOutcome& o) const {
  if (auto bad = judge_finite(o); !bad.applied()) return bad;
  if (o_.spike_zscore > 0) {
    const double z = spikes_.zscore(o.loss);
    if (z > o_.spike_zscore)
      return {StepVerdict::LossSpike,
              fmt::format("loss spike {:.4f} ({:.1f} standard deviations above the last {} steps)", o.loss, z,
                          o_.spike_window)};
  }
  return {};
}

BadStepPolicy::Next BadStepPolicy::after_step(const StepOutcome& o, TrainProgress& prog, const fs::path& last_good) {
  if (o.judgement.applied()) {
    prog.nonfinite_in_a_row = 0;
    spikes_.push(o.loss);
    prog.loss_window = spikes_.values();
    return Next::Go;
  }
  ++prog.nonfinite_in_a_row;
  log::warn("step {}: {}: update skipped ({} in a row)", prog.step + 1, o.judgement.reason, prog.nonfinite_in_a_row);
  if (o_.action == NonfiniteAction::Stop || prog.nonfinite_in_a_row >= o_.max_in_a_row)
    fail("stopping after {} bad step(s) in a row (train.on_nonfinite: {}); the last good checkpoint is {}",
         prog.nonfinite_in_a_row, enum_name(o_.action), last_good_name(last_good));
  return o_.action == NonfiniteAction::Rollback && !last_good.empty() ? Next::RollBack : Next::Go;
}

void BadStepPolicy::count_rollback(int64_t step, const fs::path& good) {
  if (++rollbacks_to_[step] > o_.max_rollbacks)
    fail("rolled back to {} {} times and the run still goes bad; stopping (lower train.lr, or check the data)",
         good.string(), rollbacks_to_[step] - 1);
}

void roll_back(TrainRun& run, BadStepPolicy& policy) {
  const fs::path good = run.result.last_checkpoint;
  const TrainProgress now = run.prog;
  const MixtureState stream = run.data->state();
  TrainProgress back = load_train_state(good, *run.sharded, *run.opt, *run.data);
  const int64_t skipped = stream.windows - run.data->state().windows;
  run.data->restore(stream);
  back.nonfinite_in_a_row = now.nonfinite_in_a_row;  // the streak ends only with a good step
  policy.count_rollback(back.step, good);
  log::warn("rollback: step {} reloaded from {}; the {} sequence(s) of steps {}..{} that led here are skipped",
            back.step, good.string(), skipped, back.step + 1, now.step + 1);
  policy.restore(back);
  run.prog = std::move(back);
}

}  // namespace agenttune
