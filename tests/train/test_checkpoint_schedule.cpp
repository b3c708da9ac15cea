// When the trainer saves, decided without a model: interval, last step, stop and exit, and the
// two refusals (an open bad streak, non-finite weights).
#include <gtest/gtest.h>

#include "agenttune/train/checkpoint_schedule.h"

namespace agenttune {
namespace {

CheckpointSchedule schedule(int64_t interval, int64_t max_steps, int64_t exit_after = 0) {
  return CheckpointSchedule({interval, max_steps, exit_after});
}

TEST(CheckpointSchedule, DueAtTheIntervalTheLastStepAStopAndAnExit) {
  const auto s = schedule(4, 10);
  EXPECT_FALSE(s.due(3, false));
  EXPECT_TRUE(s.due(4, false));
  EXPECT_TRUE(s.due(8, false));
  EXPECT_TRUE(s.due(10, false));  // the last step, off the interval
  EXPECT_TRUE(s.due(5, true));    // a stop signal
  const auto exiting = schedule(4, 10, 6);
  EXPECT_FALSE(exiting.due(5, false));
  EXPECT_TRUE(exiting.due(6, false));
}

TEST(CheckpointSchedule, AStopWinsOverAnExit) {
  const auto s = schedule(100, 10, 3);
  EXPECT_EQ(s.end_after(2, false), RunEnd::Continue);
  EXPECT_EQ(s.end_after(3, false), RunEnd::ExitAfterSteps);
  EXPECT_EQ(s.end_after(3, true), RunEnd::Stopped);
  EXPECT_EQ(schedule(100, 10).end_after(9, false), RunEnd::Continue);
}

TEST(CheckpointSchedule, NoSaveDuringAStreakNorOfNonFiniteWeights) {
  const auto s = schedule(2, 10);
  int asked = 0;
  auto finite = [&] { return ++asked, true; };
  auto overflowed = [&] { return ++asked, false; };
  EXPECT_EQ(s.decide(3, false, 0, finite), SaveDecision::NotDue);
  EXPECT_EQ(s.decide(4, false, 1, finite), SaveDecision::StreakOpen);
  EXPECT_EQ(asked, 0);  // the pass over the weights is paid only when a save could follow
  EXPECT_EQ(s.decide(4, false, 0, overflowed), SaveDecision::WeightsNonFinite);
  EXPECT_EQ(s.decide(4, false, 0, finite), SaveDecision::Save);
  EXPECT_EQ(asked, 2);
}

TEST(CheckpointSchedule, OptionsAndTheLastGoodName) {
  TrainConfig c;
  c.checkpoint.interval = 50;
  c.train.max_steps = 120;
  TrainOptions opts;
  opts.exit_after_steps = 70;
  const auto o = checkpoint_schedule_options(c, opts);
  EXPECT_EQ(o.interval, 50);
  EXPECT_EQ(o.max_steps, 120);
  EXPECT_EQ(o.exit_after_steps, 70);
  EXPECT_EQ(last_good_name(""), "(none yet)");
  EXPECT_EQ(last_good_name("run/checkpoints/step_5"), "run/checkpoints/step_5");
}

}  // namespace
}  // namespace agenttune
