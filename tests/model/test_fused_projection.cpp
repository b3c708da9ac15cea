// Sibling projections as one matmul (model/fused_projection.h) against the separate projections they
// replace: the same outputs and gradients to fp32 rounding (only the matmul's blocking differs),
// LoRA-style deltas included, and only weights that are consecutive rows of one buffer fused. The
// model takes the path off the CPU: tests/fake_device/test_fused_projection_on_device.cpp runs it there.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>

#include <map>
#include <string>

#include "agenttune/model/fused_projection.h"
#include "agenttune/model/llama.h"
#include "tiny_llama.h"

using namespace agenttune;

namespace {

double rel(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(at::kDouble), y = b.to(at::kDouble);
  return ((x - y).abs().max() / (y.abs().max() + 1e-30)).item<double>();
}

// Leaf weights [rows_i, in] that are consecutive rows of one buffer, as the sharding engine's flat
// groups hold them.
std::vector<at::Tensor> consecutive(const std::vector<int64_t>& rows, int64_t in, at::Generator& g) {
  int64_t total = 0;
  for (int64_t r : rows) total += r;
  auto flat = at::randn({total * in}, g, at::kFloat) * 0.2;
  std::vector<at::Tensor> out;
  int64_t offset = 0;
  for (int64_t r : rows) {
    out.push_back(flat.narrow(0, offset, r * in).view({r, in}).detach().requires_grad_(true));
    offset += r * in;
  }
  return out;
}

at::Tensor leaf(const at::Tensor& t) { return t.detach().clone().requires_grad_(true); }

// q/k/v with GQA and rope, each with a delta of its own (a LoRA adapter's output; fp32 on one, none
// on another), fused against linear + delta + view + apply_rope: outputs and every gradient.
TEST(FusedProjection, QkvWithRopeAndDeltasHasTheGradientsOfSeparateProjections) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  const int64_t B = 2, T = 7, D = 32, heads = 4, kv_heads = 2, hd = D / heads;
  auto w = consecutive({D, kv_heads * hd, kv_heads * hd}, D, g);
  auto x = at::randn({B, T, D}, g, at::kFloat).requires_grad_(true);
  auto dq = (at::randn({B, T, D}, g, at::kFloat) * 0.1).requires_grad_(true);
  auto dv = (at::randn({B, T, kv_heads * hd}, g, at::kFloat) * 0.1).requires_grad_(true);
  auto c = agenttune::testing::tiny_llama(61, D, 48, 1, heads, kv_heads);
  auto rope = RotaryEmbedding(c).tables(default_positions(B, T, 0, at::kCPU), at::kFloat);

  std::vector<FusedSlot> slots = {{w[0], dq, heads, true}, {w[1], {}, kv_heads, true}, {w[2], dv, kv_heads, false}};
  ASSERT_TRUE(fusable(slots));
  auto fused = fused_projections(x, slots, rope);
  ASSERT_EQ(fused.size(), 3u);
  ASSERT_TRUE(fused[0].grad_fn());
  EXPECT_NE(fused[0].grad_fn()->name().find("FusedProjections"), std::string::npos) << fused[0].grad_fn()->name();

  auto rx = leaf(x), rdq = leaf(dq), rdv = leaf(dv);
  std::vector<at::Tensor> rw = {leaf(w[0]), leaf(w[1]), leaf(w[2])};
  auto split = [&](const at::Tensor& y, int64_t h) { return y.view({B, T, h, hd}).transpose(1, 2); };
  std::vector<at::Tensor> want = {apply_rope(split(at::linear(rx, rw[0]) + rdq, heads), rope),
                                  apply_rope(split(at::linear(rx, rw[1]), kv_heads), rope),
                                  split(at::linear(rx, rw[2]) + rdv, kv_heads)};
  // One weighted sum of all outputs, so each output's grad differs.
  auto loss_of = [&](const std::vector<at::Tensor>& o) {
    return (o[0] * 0.3).sum() + (o[1] * o[1]).sum() + (o[2] * o[2] * 0.5).sum();
  };
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(fused[i].sizes(), want[i].sizes()) << i;
    EXPECT_LE(rel(fused[i], want[i]), 1e-6) << i;
  }
  loss_of(fused).backward();
  loss_of(want).backward();
  EXPECT_LE(rel(x.grad(), rx.grad()), 1e-5);
  for (size_t i = 0; i < 3; ++i) EXPECT_LE(rel(w[i].grad(), rw[i].grad()), 1e-5) << i;
  EXPECT_LE(rel(dq.grad(), rdq.grad()), 1e-5);
  EXPECT_LE(rel(dv.grad(), rdv.grad()), 1e-5);
  EXPECT_GT(dq.grad().abs().max().item<double>(), 0.0);
}

// A bf16 projection with an fp32 delta: ProjectionImpl's y + delta in fp32, rounded back to bf16;
// the delta's grad comes back in fp32.
TEST(FusedProjection, Fp32DeltaOnBf16OutputRoundsAsTheSeparatePathDoes) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(12);
  auto w = consecutive({24, 24}, 16, g);
  std::vector<at::Tensor> wb = {w[0].detach().to(at::kBFloat16), w[1].detach().to(at::kBFloat16)};
  // Still consecutive: one bf16 buffer.
  auto flat = at::cat({wb[0].reshape({-1}), wb[1].reshape({-1})});
  wb = {flat.narrow(0, 0, 24 * 16).view({24, 16}), flat.narrow(0, 24 * 16, 24 * 16).view({24, 16})};
  auto x = at::randn({2, 5, 16}, g, at::kFloat).to(at::kBFloat16);
  auto delta = (at::randn({2, 5, 24}, g, at::kFloat) * 0.1).requires_grad_(true);
  auto fused = fused_projections(x, {{wb[0], delta}, {wb[1]}}, {});
  auto want = (at::linear(x, wb[0]) + delta).to(at::kBFloat16);
  EXPECT_EQ(fused[0].scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(fused[0], want));
  fused[0].sum().backward();
  EXPECT_EQ(delta.grad().scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(delta.grad(), at::ones_like(delta)));
}

TEST(FusedProjection, OnlyConsecutiveRowsOfOneBufferAreFused) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(13);
  auto w = consecutive({8, 8, 8}, 8, g);
  EXPECT_TRUE(fusable({{w[0]}, {w[1]}, {w[2]}}));
  EXPECT_FALSE(fusable({{w[0]}, {w[2]}}));                              // a gap
  EXPECT_FALSE(fusable({{w[1]}, {w[0]}}));                              // out of order
  EXPECT_FALSE(fusable({{w[0]}, {leaf(w[1])}}));                        // another buffer
  EXPECT_FALSE(fusable({{w[0]}, {w[1].t()}}));                          // not contiguous
  EXPECT_FALSE(fusable({{w[0]}, {w[1].to(at::kDouble)}}));              // another dtype
  EXPECT_FALSE(fusable({}));
  EXPECT_THROW(fused_projections(at::randn({1, 2, 8}), {{w[0]}, {w[2]}}, {}), std::exception);
}

}  // namespace
