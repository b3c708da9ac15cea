#pragma once
// How much of a decoder layer training recomputes in backward instead of keeping
// (`model.activation_checkpointing`):
//   none       every activation autograd needs is kept;
//   selective  the cheap, memory-heavy parts are recomputed from what is kept anyway: each RMSNorm
//              keeps only its input and output, SwiGLU only gate and up (silu(gate) * up and down_proj's
//              input come back in backward); matmul outputs and attention are kept (torchtitan's
//              selective policy); the same ops, so the same bits as none;
//   full       a layer keeps only its input and is re-run whole in backward (a third more compute).
#include <array>
#include <string_view>
#include <utility>

#include "agenttune/config/scalars.h"

namespace agenttune {

enum class Recompute { None, Selective, Full };

template <>
struct EnumNames<Recompute> {
  static constexpr std::array<std::pair<Recompute, std::string_view>, 3> values = {
      {{Recompute::None, "none"}, {Recompute::Selective, "selective"}, {Recompute::Full, "full"}}};
};

// The key was a boolean until the modes came: a config that still says true or false is told what
// each meant, not only that a boolean is no longer a name.
template <>
struct ConfigScalar<Recompute> {
  static inline const std::string expected =
      "one of " + enum_name_list<Recompute>() + " (a boolean is the old form: use full (was true) or none (was false))";
  static std::optional<Recompute> parse(std::string_view s) { return parse_enum<Recompute>(s); }
  static std::string format(Recompute r) { return enum_name(r); }
};

}  // namespace agenttune
