#pragma once
// Shared by the transforms: a portable seeded RNG (std distributions differ between standard
// libraries, so a seed must not depend on them) and small text helpers.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agenttune/transforms/transform_config.h"

namespace agenttune::transforms_detail {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// FNV-1a: stable across runs and platforms, unlike std::hash.
inline uint64_t hash_text(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

inline uint64_t mix(uint64_t a, uint64_t b) { return splitmix64(a ^ splitmix64(b)); }

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(splitmix64(seed)) {}
  uint64_t next() { return splitmix64(state_++); }
  // Modulo bias is below 2^-40 for the sizes used here.
  uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }

 private:
  uint64_t state_;
};

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
