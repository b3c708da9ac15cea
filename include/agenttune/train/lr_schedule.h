#pragma once
// Learning-rate schedules: linear warmup, then cosine decay to a floor, linear decay to a floor,
// or constant. lr(step) is a pure function of the step (exact resume needs nothing else).
#include <cstdint>
#include <string>

#include "agenttune/config/scalars.h"

namespace agenttune {

enum class LrDecay { Cosine, Linear, Constant };

template <>
struct EnumNames<LrDecay> {
  static constexpr std::array<std::pair<LrDecay, std::string_view>, 3> values = {
      {{LrDecay::Cosine, "cosine"}, {LrDecay::Linear, "linear"}, {LrDecay::Constant, "constant"}}};
};

struct LrSchedule {
  double peak_lr = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  LrDecay decay = LrDecay::Cosine;
  double min_lr_ratio = 0.1;  // floor = peak * ratio (Lemur: cosine to 10 %)
  // Warmup rises from peak * ratio (Agent-FLAN: 4e-6 of 2e-5 = 0.2) rather than from 0.
  double warmup_start_ratio = 0.0;

  // lr for the update that produces step `step` (0-based): warmup is
  // peak * (start + (1 - start) * (step+1)/warmup) with start = warmup_start_ratio, then
  // the decay runs over progress = (step - warmup) / (total - warmup), clamped to [0, 1].
  double lr(int64_t step) const;
};

}  // namespace agenttune
