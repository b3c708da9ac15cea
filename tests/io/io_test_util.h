#pragma once
// Helpers shared by the io tests: the closed-form tensors of tests/io/py/io_oracle.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "agenttune/io/tensor_source.h"
#include "test_paths.h"

namespace agenttune::testing {

struct Spec {
  std::string name;
  int k;
  std::vector<int64_t> shape;
  c10::ScalarType dtype;
};

// Keep in sync with SPECS in io_oracle.py.
inline const std::vector<Spec>& oracle_specs() {
  static const std::vector<Spec> specs = {{"a.f32", 1, {3, 5}, at::kFloat},
                                          {"b.f16", 2, {7}, at::kHalf},
                                          {"c.bf16", 3, {2, 3, 4}, at::kBFloat16},
                                          {"d.scalar", 4, {}, at::kFloat}};
  return specs;
}

inline at::Tensor expected(int k, const std::vector<int64_t>& shape, c10::ScalarType dtype) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return (at::arange(n, at::kFloat) * 0.25 - k).reshape(shape).to(dtype);
}

inline NamedTensors oracle_tensors() {
  NamedTensors out;
  for (const auto& s : oracle_specs()) out.emplace_back(s.name, expected(s.k, s.shape, s.dtype));
  return out;
}

// Bit-exact: same dtype, shape and bytes.
inline ::testing::AssertionResult same(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type())
    return ::testing::AssertionFailure() << "dtype " << a.scalar_type() << " vs " << b.scalar_type();
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "shape " << a.sizes() << " vs " << b.sizes();
  if (!at::equal(a, b)) return ::testing::AssertionFailure() << "values differ";
  return ::testing::AssertionSuccess();
}

inline std::string oracle(const std::string& cmd, const std::filesystem::path& arg) {
  std::string out;
  std::string line = venv_python().string() + " " +
                     (source_dir() / "tests/io/py/io_oracle.py").string() + " " + cmd + " '" +
                     arg.string() + "'";
  int rc = run_command(line, &out);
  EXPECT_EQ(rc, 0) << line << "\n" << out;
  return out;
}

}  // namespace agenttune::testing
