// The bad-step policy on its own: verdicts, the streak, and the rollback limit, without a model.
#include <gtest/gtest.h>

#include <cmath>

#include "agenttune/train/bad_step.h"
#include "error_of.h"

namespace agenttune {
namespace {

using testing::error_of;

StepOutcome outcome(double loss, double grad_norm = 1.0) {
  StepOutcome o;
  o.loss = loss;
  o.grad_norm = grad_norm;
  return o;
}

// An outcome as train_step returns it: judged by the policy.
StepOutcome judged(const BadStepPolicy& p, double loss, double grad_norm = 1.0) {
  StepOutcome o = outcome(loss, grad_norm);
  o.judgement = p.judge(o);
  return o;
}

BadStepOptions options(NonfiniteAction action, int64_t max_in_a_row = 3) {
  BadStepOptions o;
  o.action = action;
  o.max_in_a_row = max_in_a_row;
  o.max_rollbacks = 2;
  return o;
}

TEST(BadStep, NonFiniteLossOrGradNormIsRefusedWithTheNumbers) {
  BadStepPolicy p(options(NonfiniteAction::Skip), {});
  EXPECT_TRUE(p.judge(outcome(2.0)).applied());
  const auto nan_loss = p.judge(outcome(std::nan("")));
  EXPECT_EQ(nan_loss.verdict, StepVerdict::NonFinite);
  EXPECT_NE(nan_loss.reason.find("non-finite loss nan"), std::string::npos) << nan_loss.reason;
  EXPECT_EQ(p.judge(outcome(2.0, INFINITY)).verdict, StepVerdict::NonFinite);
  EXPECT_EQ(enum_name(StepVerdict::NonFinite), "non_finite");
}

TEST(BadStep, ASpikeCountsOnlyWhenSpikeDetectionIsOnAndTheWindowFull) {
  BadStepOptions o = options(NonfiniteAction::Skip);
  o.spike_zscore = 3;
  o.spike_window = 4;
  TrainProgress start;
  start.loss_window = {1.0, 1.1, 0.9};  // not full yet: nothing is a spike
  BadStepPolicy p(o, start);
  EXPECT_TRUE(p.judge(outcome(50.0)).applied());
  TrainProgress prog = start;
  ASSERT_EQ(p.after_step(judged(p, 1.0), prog, ""), BadStepPolicy::Next::Go);
  EXPECT_EQ(prog.loss_window, (std::vector<double>{1.0, 1.1, 0.9, 1.0}));
  const auto spike = p.judge(outcome(50.0));
  EXPECT_EQ(spike.verdict, StepVerdict::LossSpike);
  EXPECT_NE(spike.reason.find("loss spike 50.0000"), std::string::npos) << spike.reason;
  EXPECT_TRUE(p.judge(outcome(1.05)).applied());
  o.spike_zscore = 0;  // off: the same loss is applied
  EXPECT_TRUE(BadStepPolicy(o, prog).judge(outcome(50.0)).applied());
}

TEST(BadStep, SkipStopsAfterMaxInARowAndAGoodStepEndsTheStreak) {
  BadStepPolicy p(options(NonfiniteAction::Skip, 3), {});
  TrainProgress prog;
  prog.step = 7;
  EXPECT_EQ(p.after_step(judged(p, NAN), prog, "ck/step_5"), BadStepPolicy::Next::Go);
  EXPECT_EQ(p.after_step(judged(p, NAN), prog, "ck/step_5"), BadStepPolicy::Next::Go);
  EXPECT_EQ(prog.nonfinite_in_a_row, 2);
  EXPECT_EQ(p.after_step(judged(p, 2.0), prog, "ck/step_5"), BadStepPolicy::Next::Go);
  EXPECT_EQ(prog.nonfinite_in_a_row, 0);
  p.after_step(judged(p, NAN), prog, "");
  p.after_step(judged(p, NAN), prog, "");
  const auto e = error_of([&] { p.after_step(judged(p, NAN), prog, ""); });
  EXPECT_NE(e.find("stopping after 3 bad step(s) in a row (train.on_nonfinite: skip); the last good checkpoint is "
                   "(none yet)"),
            std::string::npos)
      << e;
}

TEST(BadStep, StopStopsAtTheFirstBadStep) {
  BadStepPolicy p(options(NonfiniteAction::Stop, 5), {});
  TrainProgress prog;
  const auto e = error_of([&] { p.after_step(judged(p, NAN), prog, "ck/step_2"); });
  EXPECT_NE(e.find("stopping after 1 bad step(s) in a row (train.on_nonfinite: stop); the last good checkpoint is "
                   "ck/step_2"),
            std::string::npos)
      << e;
}

TEST(BadStep, RollbackNeedsACheckpointAndStopsPastMaxRollbacksToOne) {
  BadStepPolicy p(options(NonfiniteAction::Rollback, 10), {});
  TrainProgress prog;
  EXPECT_EQ(p.after_step(judged(p, NAN), prog, ""), BadStepPolicy::Next::Go);  // nothing to roll back to
  EXPECT_EQ(p.after_step(judged(p, NAN), prog, "ck/step_4"), BadStepPolicy::Next::RollBack);
  p.count_rollback(4, "ck/step_4");
  p.count_rollback(4, "ck/step_4");
  p.count_rollback(6, "ck/step_6");  // another checkpoint counts on its own
  const auto e = error_of([&] { p.count_rollback(4, "ck/step_4"); });
  EXPECT_NE(e.find("rolled back to ck/step_4 2 times and the run still goes bad"), std::string::npos) << e;
}

TEST(BadStep, OptionsComeFromTheirKeys) {
  TrainConfig c;
  c.train.on_nonfinite = NonfiniteAction::Rollback;
  c.train.max_nonfinite_in_a_row = 7;
  c.train.max_rollbacks = 9;
  c.train.spike_zscore = 4;
  c.train.spike_window = 16;
  const auto o = bad_step_options(c);
  EXPECT_EQ(o.action, NonfiniteAction::Rollback);
  EXPECT_EQ(o.max_in_a_row, 7);
  EXPECT_EQ(o.max_rollbacks, 9);
  EXPECT_EQ(o.spike_zscore, 4);
  EXPECT_EQ(o.spike_window, 16);
}

}  // namespace
}  // namespace agenttune
