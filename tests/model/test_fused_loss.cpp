// The training loss without logits (linear_cross_entropy_sum, LlamaForCausalLM::loss_sum) against
// the plain path it replaces: logits, then at::cross_entropy_loss. Chunking changes only the order
// of the loss's final sum and where the 1/N scale is applied, so the figures agree to fp32
// rounding (1e-6 relative for the loss, 1e-5 for the grads), and to bf16 rounding in bf16.
// Also the document spans the CUDA varlen attention takes, against a per-token walk.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"
#include "tiny_llama.h"

using namespace agenttune;

namespace {

double rel(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(at::kDouble), y = b.to(at::kDouble);
  return ((x - y).abs().max() / (y.abs().max() + 1e-30)).item<double>();
}

struct Case {
  at::Tensor hidden, weight, targets;
};

Case random_case(int64_t N, int64_t D, int64_t V, uint64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  Case c;
  c.hidden = at::randn({N, D}, g, at::kFloat);
  c.weight = at::randn({V, D}, g, at::kFloat) * 0.3;
  c.targets = at::randint(0, V, {N}, g, at::kLong);
  // Every third position untrained, as a masked SFT batch has.
  c.targets.index_put_({at::arange(0, N, 3)}, kIgnoreIndex);
  return c;
}

// Loss and grads (hidden, weight) of loss / scale, through `loss_fn`.
std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_and_grads(
    const Case& c, c10::ScalarType dtype, const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& loss_fn) {
  auto h = c.hidden.to(dtype).requires_grad_(true);
  auto w = c.weight.to(dtype).requires_grad_(true);
  auto loss = loss_fn(h, w);
  (loss / 7.0).backward();
  return {loss.detach(), h.grad(), w.grad()};
}

TEST(FusedLoss, EqualsLogitsThenCrossEntropyForAnyChunking) {
  const auto c = random_case(37, 16, 53, 3);
  auto [want_loss, want_h, want_w] = loss_and_grads(c, at::kFloat, [&](const at::Tensor& h, const at::Tensor& w) {
    return cross_entropy_sum(at::matmul(h, w.t()), c.targets);
  });
  for (int64_t chunk : {1, 5, 36, 37, 1000, 0}) {
    auto [loss, gh, gw] = loss_and_grads(c, at::kFloat, [&](const at::Tensor& h, const at::Tensor& w) {
      return linear_cross_entropy_sum(h, w, c.targets, chunk);
    });
    EXPECT_EQ(loss.scalar_type(), at::kFloat);
    EXPECT_LE(rel(loss, want_loss), 1e-6) << "chunk " << chunk;
    EXPECT_LE(rel(gh, want_h), 1e-5) << "chunk " << chunk;
    EXPECT_LE(rel(gw, want_w), 1e-5) << "chunk " << chunk;
    EXPECT_EQ(gw.scalar_type(), at::kFloat);
  }
}

TEST(FusedLoss, Bf16AgreesToBf16RoundingAndKeepsTheWeightDtype) {
  const auto c = random_case(64, 32, 97, 5);
  auto [want_loss, want_h, want_w] = loss_and_grads(c, at::kBFloat16, [&](const at::Tensor& h, const at::Tensor& w) {
    return cross_entropy_sum(at::matmul(h, w.t()), c.targets);
  });
  auto [loss, gh, gw] = loss_and_grads(c, at::kBFloat16, [&](const at::Tensor& h, const at::Tensor& w) {
    return linear_cross_entropy_sum(h, w, c.targets, 10);
  });
  EXPECT_EQ(gh.scalar_type(), at::kBFloat16);
  EXPECT_EQ(gw.scalar_type(), at::kBFloat16);
  EXPECT_LE(rel(loss, want_loss), 1e-5);  // the logits are the same bf16 matmul; the loss is fp32
  EXPECT_LE(rel(gh, want_h), 2e-2);
  EXPECT_LE(rel(gw, want_w), 2e-2);
}

TEST(FusedLoss, WithoutGradModeOnlyTheLossAndAllUntrainedIsZero) {
  const auto c = random_case(20, 8, 11, 9);
  auto want = cross_entropy_sum(at::matmul(c.hidden, c.weight.t()), c.targets);
  {
    at::NoGradGuard ng;
    auto w = c.weight.clone().requires_grad_(true);
    auto loss = linear_cross_entropy_sum(c.hidden, w, c.targets, 3);
    EXPECT_FALSE(loss.requires_grad());
    EXPECT_LE(rel(loss, want), 1e-6);
  }
  auto none = at::full({20}, kIgnoreIndex, at::kLong);
  auto h = c.hidden.clone().requires_grad_(true);
  auto loss = linear_cross_entropy_sum(h, c.weight, none, 4);
  loss.backward();
  EXPECT_EQ(loss.item<double>(), 0.0);
  EXPECT_EQ(h.grad().abs().max().item<double>(), 0.0);
}

// bf16 inputs (as a bf16 run's head sees them) and their float64 reference: the loss summed in
// float64, divided by the trained-token count, plain autograd.
struct Bf16Head {
  at::Tensor hidden, weight, targets;
  double denom = 0;
  at::Tensor ref_weight_grad;
};

Bf16Head bf16_head() {
  const auto c = random_case(512, 64, 1000, 21);
  Bf16Head b{c.hidden.to(at::kBFloat16), (c.weight * 0.5).to(at::kBFloat16), c.targets};
  b.denom = static_cast<double>(count_trained(b.targets));
  auto w = b.weight.to(at::kDouble).requires_grad_(true);
  auto logits = at::matmul(b.hidden.to(at::kDouble), w.t());
  (at::cross_entropy_loss(logits, b.targets, {}, at::Reduction::Sum, kIgnoreIndex) / b.denom).backward();
  b.ref_weight_grad = w.grad();
  return b;
}

double rel_norm(const at::Tensor& a, const at::Tensor& ref) {
  return ((a.to(at::kDouble) - ref).norm() / ref.norm()).item<double>();
}

// What bf16 matmuls accumulating in fp32 can reach: bf16 logits, the softmax gradient rounded to
// bf16 once, the weight gradient accumulated and scaled in fp32.
double ideal_bf16_weight_grad_error(const Bf16Head& b) {
  auto h = b.hidden.to(at::kFloat), w = b.weight.to(at::kFloat);
  auto logits = at::matmul(h, w.t()).to(at::kBFloat16).to(at::kFloat);
  auto valid = (b.targets != kIgnoreIndex).unsqueeze(1);
  auto onehot = at::one_hot(at::where(valid.squeeze(1), b.targets, 0), logits.size(1)).to(at::kFloat);
  auto g = ((at::softmax(logits, 1) - onehot) * valid).to(at::kBFloat16).to(at::kFloat);
  return rel_norm(at::matmul(g.t(), h) / b.denom, b.ref_weight_grad);
}

TEST(FusedLoss, Bf16HeadWeightGradientIsAsCloseToFloat64AsFp32AccumulationAllows) {
  const auto b = bf16_head();
  auto h = b.hidden.clone().requires_grad_(true);
  auto w = b.weight.clone().requires_grad_(true);
  at::Tensor sunk;  // what the sharding engine's fp32 accumulator receives
  (linear_cross_entropy_sum(h, w, b.targets, 64, [&](at::Tensor g) { sunk = std::move(g); }) / b.denom).backward();
  EXPECT_FALSE(w.grad().defined());  // the sink took it, not autograd
  ASSERT_TRUE(sunk.defined());
  EXPECT_EQ(sunk.scalar_type(), at::kFloat);
  // Without a sink autograd rounds it to the weight's bf16: the plain model's path.
  auto w2 = b.weight.clone().requires_grad_(true);
  (linear_cross_entropy_sum(b.hidden, w2, b.targets, 64) / b.denom).backward();
  const double ours = rel_norm(sunk, b.ref_weight_grad), ideal = ideal_bf16_weight_grad_error(b);
  std::printf("[ figures  ] bf16 head weight grad vs float64 (8 chunks): %.4e (through autograd, bf16: %.4e); "
              "fp32-accumulated bf16 matmuls: %.4e (ratio %.3f)\n",
              ours, rel_norm(w2.grad(), b.ref_weight_grad), ideal, ours / ideal);
  EXPECT_LE(ours / ideal, 1.25);
}

// The 1/denominator scale reaches the hidden gradient in fp32: one rounding of the fp32 product,
// not a product with the scale rounded to bf16.
TEST(FusedLoss, Bf16HiddenGradientIsScaledInFp32) {
  // Bit equality of two backward passes needs the same bf16 GEMM both times: on a loaded machine
  // the CPU's multi-threaded bf16 kernels may split the work differently from one call to the next.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  struct Restore { int n; ~Restore() { at::set_num_threads(n); } } restore{threads};
  const auto b = bf16_head();
  auto grad_with = [&](double denom) {
    auto h = b.hidden.clone().requires_grad_(true);
    auto loss = linear_cross_entropy_sum(h, b.weight, b.targets, 64);
    (denom == 1.0 ? loss : loss / denom).backward();
    return h.grad();
  };
  const auto unscaled = grad_with(1.0), scaled = grad_with(b.denom);
  const auto scale = at::ones({}, at::kFloat) / b.denom;
  EXPECT_TRUE(at::equal(scaled, (unscaled.to(at::kFloat) * scale).to(at::kBFloat16)));
}

// Every target trained: the unmasked path (what the model's head takes once it has selected its
// trained rows) gives the masked path's loss and grads, bit for bit.
TEST(FusedLoss, AllTrainedSkipsTheMasksWithTheSameBits) {
  auto c = random_case(41, 16, 53, 7);
  c.targets = at::randint(0, 53, {41}, at::make_generator<at::CPUGeneratorImpl>(8), at::kLong);
  auto masked = loss_and_grads(c, at::kFloat, [&](const at::Tensor& h, const at::Tensor& w) {
    return linear_cross_entropy_sum(h, w, c.targets, 9);
  });
  auto unmasked = loss_and_grads(c, at::kFloat, [&](const at::Tensor& h, const at::Tensor& w) {
    return linear_cross_entropy_sum(h, w, c.targets, 9, {}, /*all_trained=*/true);
  });
  EXPECT_TRUE(at::equal(std::get<0>(masked), std::get<0>(unmasked)));
  EXPECT_TRUE(at::equal(std::get<1>(masked), std::get<1>(unmasked)));
  EXPECT_TRUE(at::equal(std::get<2>(masked), std::get<2>(unmasked)));
}

// A frozen head (LoRA): no weight gradient is formed or handed to the sink; the hidden gradient is
// the one a trainable head gives.
TEST(FusedLoss, FrozenHeadGetsNoGradientAndTheSinkIsNotCalled) {
  const auto c = random_case(30, 16, 47, 9);
  auto h = c.hidden.clone().requires_grad_(true);
  bool sunk = false;
  (linear_cross_entropy_sum(h, c.weight, c.targets, 8, [&](at::Tensor) { sunk = true; }) / 3.0).backward();
  EXPECT_FALSE(sunk);
  EXPECT_FALSE(c.weight.grad().defined());
  auto h2 = c.hidden.clone().requires_grad_(true);
  auto w2 = c.weight.clone().requires_grad_(true);
  (linear_cross_entropy_sum(h2, w2, c.targets, 8) / 3.0).backward();
  EXPECT_TRUE(w2.grad().defined());
  EXPECT_TRUE(at::equal(h.grad(), h2.grad()));
}

LlamaConfig tiny() { return agenttune::testing::tiny_llama(61); }

// The model's training loss: fused, and with only the trained positions through the head when
// their count is given, against the logits path; the grads of every parameter too.
TEST(FusedLoss, ModelLossSumMatchesLogitsPathAlsoOnTrainedPositionsOnly) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(4);
  auto tokens = at::randint(0, 61, {2, 24}, g, at::kLong);
  auto positions = default_positions(2, 24, 0, at::kCPU);
  auto targets = labels_to_targets(tokens);
  targets.narrow(1, 0, 10).fill_(kIgnoreIndex);  // a prompt: untrained
  const int64_t trained = count_trained(targets);
  ASSERT_EQ(trained, 2 * 13);
  auto grads_of = [&](const std::function<at::Tensor(LlamaForCausalLM&)>& loss_fn) {
    auto m = make_llama(tiny(), 8);
    auto loss = loss_fn(m);
    loss.backward();
    std::map<std::string, at::Tensor> out{{"loss", loss.detach()}};
    for (auto& p : m->named_parameters()) out[p.key()] = p.value().grad();
    return out;
  };
  auto want = grads_of([&](LlamaForCausalLM& m) { return cross_entropy_sum(m->forward(tokens, positions), targets); });
  for (int64_t n : {int64_t{-1}, trained}) {
    auto got = grads_of([&](LlamaForCausalLM& m) { return m->loss_sum(tokens, positions, targets, {}, n); });
    for (auto& [name, t] : want) EXPECT_LE(rel(got.at(name), t), 1e-5) << name << " trained " << n;
  }
}

// The cumulative lengths a varlen flash kernel would get, against a per-token walk: a document
// ends where its id changes or its row ends (ids may repeat across rows).
TEST(DocumentSpans, CumulativeLengthsFollowTheDocumentIds) {
  auto ids = at::tensor({0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, at::kLong).view({2, 10});
  auto spans = document_spans(ids);
  EXPECT_TRUE(at::equal(spans.cu_seqlens, at::tensor({0, 3, 5, 10, 20}, at::kInt)));
  EXPECT_EQ(spans.max_seqlen, 10);

  auto g = at::make_generator<at::CPUGeneratorImpl>(12);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t B = 1 + trial % 4, T = 5 + trial * 3;
    // Non-decreasing ids per row (documents are packed in order).
    auto steps = (at::rand({B, T}, g) < 0.2).to(at::kLong);
    auto doc = steps.cumsum(1);
    auto got = document_spans(doc);
    auto d = doc.accessor<int64_t, 2>();
    std::vector<int32_t> cu{0};
    int64_t longest = 0, run = 0;
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t < T; ++t) {
        ++run;
        if (t + 1 == T || d[r][t + 1] != d[r][t]) {
          cu.push_back(static_cast<int32_t>(cu.back() + run));
          longest = std::max(longest, run);
          run = 0;
        }
      }
    EXPECT_TRUE(at::equal(got.cu_seqlens, at::tensor(cu, at::kInt))) << "trial " << trial;
    EXPECT_EQ(got.max_seqlen, longest);
    EXPECT_EQ(got.cu_seqlens[-1].item<int64_t>(), B * T);
  }
}

}  // namespace
