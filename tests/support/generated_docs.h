#pragma once
// Seeded documents that look like the code-heavy pretraining mix: source snippets, prose, some
// non-ASCII. Shared by the prepare tests and the tokenizer's fast-BPE parity tests.
#include <random>
#include <string>
#include <vector>

namespace agenttune::testing {

inline std::vector<std::string> generated_docs(size_t n, uint32_t seed) {
  const std::vector<std::string> pieces = {
      "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n  sum += a[i];\n}\n",
      "The quick brown fox jumps over the lazy dog. ", "import numpy as np\n", "  # comment\n",
      "Ünïcödé text, 日本語 and 😀 emoji. ", "SELECT * FROM t WHERE id = 42;\n", "\t\tindented\n",
      "return {\"key\": [1, 2, 3]};\n", "Lorem ipsum dolor sit amet, consectetur adipiscing elit. "};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, pieces.size() - 1), len(1, 60);
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    std::string s;
    for (size_t k = len(rng); k > 0; --k) s += pieces[pick(rng)];
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace agenttune::testing
