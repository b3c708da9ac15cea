#include <gtest/gtest.h>

#include <cmath>

#include "agenttune/train/loss_spike.h"

namespace agenttune {
namespace {

TEST(LossSpike, ZscoreAgainstTheLastWindowOfAcceptedLosses) {
  LossSpikeDetector d(3);
  EXPECT_EQ(d.zscore(100.0), 0.0);  // filling: never a spike
  d.push(1.0);
  d.push(2.0);
  EXPECT_EQ(d.zscore(100.0), 0.0);
  d.push(3.0);
  // mean 2, population sd sqrt(2/3)
  EXPECT_NEAR(d.zscore(4.0), 2.0 / std::sqrt(2.0 / 3.0), 1e-12);
  EXPECT_NEAR(d.zscore(1.0), -1.0 / std::sqrt(2.0 / 3.0), 1e-12);
  d.push(5.0);  // the window slides: {2, 3, 5}
  EXPECT_EQ(d.values(), (std::vector<double>{2.0, 3.0, 5.0}));
  LossSpikeDetector flat(2);
  flat.restore({0.5, 0.5, 0.5});  // restore keeps the newest `window`
  EXPECT_EQ(flat.values(), (std::vector<double>{0.5, 0.5}));
  EXPECT_EQ(flat.zscore(0.5), 0.0);
  EXPECT_TRUE(std::isinf(flat.zscore(0.6)));
}

}  // namespace
}  // namespace agenttune
