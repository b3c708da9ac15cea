#pragma once
// Learning-rate schedules: linear warmup, then cosine decay to a floor, linear decay to a floor,
// or constant. lr(step) is a pure function of the step (exact resume needs nothing else).
#include <cstdint>
#include <string>

namespace agenttune {

enum class LrDecay { Cosine, Linear, Constant };

// "cosine" | "linear" | "constant"; anything else throws agenttune::Error listing those names.
LrDecay parse_lr_decay(const std::string& name);
std::string lr_decay_name(LrDecay decay);

struct LrSchedule {
  double peak_lr = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  LrDecay decay = LrDecay::Cosine;
  double min_lr_ratio = 0.1;  // floor = peak * ratio (Lemur: cosine to 10 %)

  // lr for the update that produces step `step` (0-based): warmup is (step+1)/warmup * peak, then
  // the decay runs over progress = (step - warmup) / (total - warmup), clamped to [0, 1].
  double lr(int64_t step) const;
};

}  // namespace agenttune
