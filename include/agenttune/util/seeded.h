#pragma once
// Portable seeded randomness and stable hashes: std's distributions and std::hash differ between
// standard libraries, and a seed (data order, subsets, transforms) must mean the same everywhere.
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace agenttune {

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

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(splitmix64(seed)) {}
  uint64_t next() { return splitmix64(state_++); }
  // Modulo bias is below 2^-40 at dataset sizes.
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

}  // namespace agenttune
