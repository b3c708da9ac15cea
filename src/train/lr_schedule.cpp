#include "agenttune/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "agenttune/util/error.h"

namespace agenttune {

double LrSchedule::lr(int64_t step) const {
  if (step < warmup_steps)
    return peak_lr * warmup_start_ratio +
           peak_lr * (1.0 - warmup_start_ratio) * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (decay == LrDecay::Constant) return peak_lr;
  const int64_t span = total_steps - warmup_steps;
  // A schedule with no room to decay (total <= warmup) sits at the floor once warmup ends.
  const double progress =
      span <= 0 ? 1.0 : std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(span), 0.0, 1.0);
  const double floor = peak_lr * min_lr_ratio;
  const double shape = decay == LrDecay::Cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) : 1.0 - progress;
  return floor + (peak_lr - floor) * shape;
}

}  // namespace agenttune
