#include "agenttune/train/loss_spike.h"

#include <cmath>

namespace agenttune {

double LossSpikeDetector::zscore(double loss) const {
  if (static_cast<int64_t>(losses_.size()) < window_) return 0.0;
  double mean = 0, sq = 0;
  for (double l : losses_) mean += l;
  mean /= static_cast<double>(losses_.size());
  for (double l : losses_) sq += (l - mean) * (l - mean);
  const double sd = std::sqrt(sq / static_cast<double>(losses_.size()));
  if (!(sd > 0)) return loss > mean ? INFINITY : 0.0;  // a flat window: any rise is a spike
  return (loss - mean) / sd;
}

void LossSpikeDetector::push(double loss) {
  losses_.push_back(loss);
  while (static_cast<int64_t>(losses_.size()) > window_) losses_.pop_front();
}

void LossSpikeDetector::restore(const std::vector<double>& values) {
  losses_.clear();
  for (double v : values) push(v);
}

}  // namespace agenttune
