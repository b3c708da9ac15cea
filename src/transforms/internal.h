#pragma once
// Shared by the transforms: seed derivation (on util/seeded.h) and small text helpers.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agenttune/transforms/transform_config.h"
#include "agenttune/util/seeded.h"

namespace agenttune::transforms_detail {

inline uint64_t mix(uint64_t a, uint64_t b) { return splitmix64(a ^ splitmix64(b)); }

// Distinct stages draw from unrelated streams even when they share the default seed 0.
inline uint64_t stage_seed(uint64_t seed, std::string_view stage) {
  return mix(seed, hash_text(stage));
}

inline std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

inline int64_t share(double fraction, size_t n) {
  return static_cast<int64_t>(fraction * static_cast<double>(n) + 0.5);
}

// Throw agenttune::Error naming `where`.<key>; each stage checks its own section on entry.
void validate_align(const AlignConfig& c, const std::string& where);
void validate_balance(const BalanceConfig& c, const std::string& where);
void validate_format(const FormatFollowingConfig& c, const std::string& where);
void validate_negatives(const NegativesConfig& c, const std::string& where);

}  // namespace agenttune::transforms_detail
