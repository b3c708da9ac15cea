#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "agenttune/train/lr_schedule.h"
#include "agenttune/util/error.h"

namespace agenttune {
namespace {

LrSchedule schedule(LrDecay decay, int64_t warmup = 10, int64_t total = 110) {
  return LrSchedule{.peak_lr = 1e-3, .warmup_steps = warmup, .total_steps = total, .decay = decay, .min_lr_ratio = 0.1};
}

TEST(LrSchedule, WarmupIsLinearFromOneStep) {
  for (auto decay : {LrDecay::Cosine, LrDecay::Linear, LrDecay::Constant}) {
    auto s = schedule(decay);
    EXPECT_DOUBLE_EQ(s.lr(0), 1e-4);
    EXPECT_DOUBLE_EQ(s.lr(4), 5e-4);
    EXPECT_DOUBLE_EQ(s.lr(9), 1e-3);
    EXPECT_DOUBLE_EQ(s.lr(10), 1e-3);  // decay starts at the peak
  }
}

TEST(LrSchedule, CosineDecaysToFloor) {
  auto s = schedule(LrDecay::Cosine);
  for (int64_t step = 10; step <= 130; ++step) {
    double progress = std::min(1.0, (step - 10) / 100.0);
    double expected = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + std::cos(std::numbers::pi * progress));
    EXPECT_NEAR(s.lr(step), expected, 1e-18) << step;
  }
  EXPECT_NEAR(s.lr(60), 5.5e-4, 1e-15);  // halfway: midpoint of peak and floor
  EXPECT_DOUBLE_EQ(s.lr(110), 1e-4);
  EXPECT_DOUBLE_EQ(s.lr(1000), 1e-4);
}

TEST(LrSchedule, LinearDecaysToFloor) {
  auto s = schedule(LrDecay::Linear);
  EXPECT_NEAR(s.lr(35), 1e-3 - 0.25 * 9e-4, 1e-15);
  EXPECT_NEAR(s.lr(60), 5.5e-4, 1e-15);
  EXPECT_DOUBLE_EQ(s.lr(110), 1e-4);
  EXPECT_DOUBLE_EQ(s.lr(500), 1e-4);
}

TEST(LrSchedule, ConstantAndDegenerateSpans) {
  EXPECT_DOUBLE_EQ(schedule(LrDecay::Constant).lr(1000), 1e-3);
  EXPECT_DOUBLE_EQ(schedule(LrDecay::Cosine, 0, 100).lr(0), 1e-3);  // no warmup: starts at peak
  EXPECT_DOUBLE_EQ(schedule(LrDecay::Cosine, 10, 10).lr(10), 1e-4);  // nothing left to decay over
}

TEST(LrSchedule, DecayNamesRoundTrip) {
  for (auto decay : {LrDecay::Cosine, LrDecay::Linear, LrDecay::Constant})
    EXPECT_EQ(parse_enum<LrDecay>(enum_name(decay)), decay);
  EXPECT_EQ(enum_name(LrDecay::Linear), "linear");
  EXPECT_EQ(parse_enum<LrDecay>("cosin"), std::nullopt);
  EXPECT_EQ(ConfigScalar<LrDecay>::expected, "one of cosine, linear, constant");
}

}  // namespace
}  // namespace agenttune

namespace agenttune {
namespace {

TEST(LrSchedule, WarmupRisesFromTheStartRatio) {
  LrSchedule s{.peak_lr = 2e-5, .warmup_steps = 10, .total_steps = 100, .decay = LrDecay::Cosine,
               .min_lr_ratio = 0.0, .warmup_start_ratio = 0.2};
  EXPECT_NEAR(s.lr(0), 2e-5 * (0.2 + 0.8 / 10), 1e-18);
  EXPECT_NEAR(s.lr(4), 2e-5 * (0.2 + 0.8 * 5 / 10), 1e-18);
  EXPECT_DOUBLE_EQ(s.lr(9), 2e-5);
  // Ratio 0 is the plain warmup, to the bit.
  s.warmup_start_ratio = 0;
  for (int64_t k = 0; k < 10; ++k) EXPECT_EQ(s.lr(k), 2e-5 * static_cast<double>(k + 1) / 10.0);
}

}  // namespace
}  // namespace agenttune
