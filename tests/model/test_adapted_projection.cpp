// The one-node adapted projections against autograd's chain of the same ops (W x + b + B (s A x)):
// outputs, x's gradient and every adapter gradient, for a group with a bias, distinct ranks'
// scales and one output that gets no gradient.
#include "agenttune/model/adapted_projection.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "agenttune/util/error.h"

namespace agenttune {
namespace {

Projection adapted(int64_t in, int64_t out, int64_t rank, double scale, bool bias, uint64_t seed) {
  at::manual_seed(seed);
  Projection p(at::randn({out, in}), bias ? at::randn({out}) : at::Tensor());
  p->attach_adapter(rank, scale, 0.0);
  at::NoGradGuard no_grad;
  p->lora_A.copy_(at::randn_like(p->lora_A));
  p->lora_B.copy_(at::randn_like(p->lora_B));
  return p;
}

TEST(AdaptedProjections, EqualAutogradsChainInValuesAndGradients) {
  std::vector<Projection> group = {adapted(48, 32, 4, 2.0, true, 1), adapted(48, 16, 4, 0.5, false, 2),
                                   adapted(48, 24, 4, 1.5, true, 3)};
  std::vector<ProjectionImpl*> ptrs;
  for (auto& p : group) ptrs.push_back(p.get());
  const auto x0 = at::randn({2, 5, 48});
  const auto weights = at::randn({2, 5, 32}), weights_v = at::randn({2, 5, 24});

  auto run = [&](bool fused) {
    for (auto& p : group)
      for (auto& t : {p->lora_A, p->lora_B}) t.mutable_grad() = at::Tensor();
    auto x = x0.clone().requires_grad_(true);
    std::vector<at::Tensor> y;
    if (fused) {
      EXPECT_TRUE(adapted_together(x, ptrs));
      y = adapted_projections(x, ptrs);
    } else {
      for (auto& p : group) {
        auto base = at::linear(x, p->weight, p->bias);
        y.push_back(base + at::linear(at::linear(x, p->lora_A) * p->lora_scale, p->lora_B));
      }
    }
    // k's output (y[1]) feeds nothing: its slot gets no gradient.
    ((y[0] * weights).sum() + (y[2] * weights_v).sum()).backward();
    std::vector<at::Tensor> got = {y[0].detach(), y[1].detach(), y[2].detach(), x.grad()};
    for (auto& p : group) got.push_back(p->lora_A.grad()), got.push_back(p->lora_B.grad());
    return got;
  };
  const auto want = run(false), got = run(true);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(got[i].defined(), want[i].defined());  // k's adapter: no gradient on either side
    if (!want[i].defined()) continue;
    EXPECT_EQ(got[i].sizes(), want[i].sizes());
    EXPECT_TRUE(at::allclose(got[i], want[i], 1e-5, 1e-4)) << (got[i] - want[i]).abs().max().item<double>();
  }
  EXPECT_GT(want[3].abs().max().item<double>(), 0.0);
  EXPECT_FALSE(want[6].defined());
}

TEST(AdaptedProjections, RefuseAProjectionWithoutAnAdapterOrUnderDropout) {
  auto a = adapted(16, 8, 2, 1.0, false, 4);
  Projection plain(at::randn({8, 16}));
  const auto x = at::randn({3, 16});
  EXPECT_FALSE(adapted_together(x, {a.get(), plain.get()}));
  EXPECT_THROW(adapted_projections(x, {a.get(), plain.get()}), Error);
  EXPECT_FALSE(adapted_together(x.to(at::kDouble), {a.get()}));
  a->lora_dropout = 0.1;
  EXPECT_FALSE(adapted_together(x, {a.get()}));
  a->eval();  // dropout follows the training flag
  EXPECT_TRUE(adapted_together(x, {a.get()}));
}

}  // namespace
}  // namespace agenttune
