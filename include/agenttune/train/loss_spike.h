#pragma once
// A loss-spike detector after llm.c's OutlierDetector: the z-score of a step's loss against the
// last `window` accepted losses. Until the window is full it reports nothing (0), so the early,
// fast-falling losses of a run never look like spikes. Its state is the window itself, saved in
// checkpoints so a resumed run judges the next step exactly as the uninterrupted run would.
#include <cstdint>
#include <deque>
#include <vector>

namespace agenttune {

class LossSpikeDetector {
 public:
  explicit LossSpikeDetector(int64_t window) : window_(window) {}

  // How many standard deviations `loss` lies above the window's mean; 0 while filling.
  double zscore(double loss) const;
  // Records an accepted step's loss (spikes and non-finite steps are not recorded).
  void push(double loss);

  std::vector<double> values() const { return {losses_.begin(), losses_.end()}; }
  void restore(const std::vector<double>& values);

 private:
  int64_t window_;
  std::deque<double> losses_;
};

}  // namespace agenttune
