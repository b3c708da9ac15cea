// The one-node adapted projections against autograd's chain of the same ops (W x + b + B (s A x)):
// outputs, x's gradient and every adapter gradient, for a group with a bias, distinct ranks'
// scales and one output that gets no gradient, dense and NF4 (QLoRA) weights.
#include "agenttune/model/adapted_projection.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "agenttune/quant/nf4.h"
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

// A QLoRA slot: a frozen NF4 record of a random weight, a bias and an adapter (as quantize_projections
// leaves an adapted projection).
Projection nf4_adapted(int64_t in, int64_t out, int64_t rank, double scale, uint64_t seed) {
  at::manual_seed(seed);
  const auto w = at::randn({out, in});
  auto record = at::empty({quant::nf4_record_bytes(w.numel())}, w.options().dtype(at::kByte));
  quant::pack_nf4(quant::quantize_nf4(w, quant::nf4_tables(w.device())), record);
  Projection p(record, std::vector<int64_t>{out, in}, at::randn({out}));
  p->lora_A = p->register_parameter("lora_A", at::randn({rank, in}));
  p->lora_B = p->register_parameter("lora_B", at::randn({out, rank}));
  p->lora_scale = scale;
  return p;
}

// Autograd's chain of the same ops, an NF4 weight dequantised into x's dtype as quant::nf4_linear does.
at::Tensor chain(const at::Tensor& x, const ProjectionImpl& p) {
  const auto w = p.quantized() ? quant::dequantize_nf4(quant::nf4_record_view(p.weight_nf4, p.nf4_shape),
                                                       x.scalar_type(), quant::nf4_tables(x.device()))
                               : p.weight;
  return at::linear(x, w, p.bias) + at::linear(at::linear(x, p.lora_A) * p.lora_scale, p.lora_B);
}

// Outputs, x's gradient and every adapter gradient of the one node against the chain; the second
// slot's output feeds nothing, so its adapter gets no gradient on either side.
void expect_node_equals_chain(std::vector<Projection> group, int64_t in) {
  std::vector<ProjectionImpl*> ptrs;
  for (auto& p : group) ptrs.push_back(p.get());
  const auto x0 = at::randn({2, 5, in});
  std::vector<at::Tensor> weights;
  for (const auto& p : group) weights.push_back(at::randn({2, 5, p->lora_B.size(0)}));

  auto run = [&](bool node) {
    for (const auto& p : group)
      for (auto& t : {p->lora_A, p->lora_B}) t.mutable_grad() = at::Tensor();
    auto x = x0.clone().requires_grad_(true);
    std::vector<at::Tensor> y;
    if (node) {
      EXPECT_TRUE(adapted_together(x, ptrs));
      y = adapted_projections(x, ptrs);
    } else {
      for (const auto& p : group) y.push_back(chain(x, *p));
    }
    auto loss = (y[0] * weights[0]).sum();
    for (size_t i = 2; i < y.size(); ++i) loss = loss + (y[i] * weights[i]).sum();
    loss.backward();
    std::vector<at::Tensor> got = {x.grad()};
    for (const auto& t : y) got.push_back(t.detach());
    for (const auto& p : group) got.push_back(p->lora_A.grad()), got.push_back(p->lora_B.grad());
    return got;
  };
  const auto want = run(false), got = run(true);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(got[i].defined(), want[i].defined());
    if (!want[i].defined()) continue;
    EXPECT_EQ(got[i].sizes(), want[i].sizes());
    EXPECT_TRUE(at::allclose(got[i], want[i], 1e-5, 1e-4)) << (got[i] - want[i]).abs().max().item<double>();
  }
  EXPECT_GT(want[0].abs().max().item<double>(), 0.0);
  EXPECT_FALSE(want[1 + group.size() + 2].defined());  // the second slot's lora_A
}

TEST(AdaptedProjections, EqualAutogradsChainInValuesAndGradients) {
  expect_node_equals_chain({adapted(48, 32, 4, 2.0, true, 1), adapted(48, 16, 4, 0.5, false, 2),
                            adapted(48, 24, 4, 1.5, true, 3)},
                           48);
}

// QLoRA's slots: the NF4 weight dequantised for the forward matmul and again for x's gradient, next
// to a dense one (a group mixes them only in this test; a model's group is all one kind).
TEST(AdaptedProjections, NfFourSlotsEqualTheChainOverTheDequantisedWeight) {
  expect_node_equals_chain({nf4_adapted(128, 64, 4, 2.0, 5), nf4_adapted(128, 32, 8, 0.5, 6),
                            adapted(128, 48, 4, 1.5, true, 7)},
                           128);
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
