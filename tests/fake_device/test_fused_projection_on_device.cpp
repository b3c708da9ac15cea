// The model's fused q/k/v and gate/up path (model/fused_projection.h), which it takes off the CPU,
// run on the fake device: a model whose layer weights are flat (as the sharding engine holds them)
// trains as the same model with separate weights, bit for bit across recompute modes, and decodes
// with a KV cache as its full forward.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "agenttune/model/fused_projection.h"
#include "agenttune/model/kv_cache.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"
#include "fake_device.h"
#include "tiny_llama.h"

using namespace agenttune;
namespace fd = agenttune::testing::fake_device;

namespace {

double rel(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(at::kDouble), y = b.to(at::kDouble);
  return ((x - y).abs().max() / (y.abs().max() + 1e-30)).item<double>();
}

struct Run {
  at::Tensor loss;
  std::map<std::string, at::Tensor> grads;
};

Run train_once(LlamaForCausalLM& m, Recompute mode) {
  auto tokens = at::arange(3, 3 + 2 * 17, at::kLong).mul(5).remainder(m->config().vocab_size).view({2, 17});
  m->recompute = mode;
  Run r;
  r.loss = m->loss_sum(tokens.to(fd::device()), default_positions(2, 17, 0, fd::device()), labels_to_targets(tokens).to(fd::device()))
               .cpu();
  r.loss.backward();
  for (auto& p : m->named_parameters()) {
    r.grads[p.key()] = p.value().grad().cpu();
    p.value().mutable_grad().reset();
  }
  return r;
}

// The model with flat layer weights (fused q/k/v and gate/up) against the same model with separate
// weights; and, fused, each recompute mode against none, bit for bit.
TEST(FusedProjection, FlatLayerWeightsTrainAsSeparateOnesInEveryRecomputeMode) {
  const auto c = agenttune::testing::tiny_llama(61, 32, 48, 2, 4, 2);
  auto separate = make_llama(c, 5, fd::device()), flat = make_llama(c, 5, fd::device());
  flatten_layer_weights(flat);
  auto& attn = flat->model->layers[0]->self_attn;
  ASSERT_TRUE(fusable({{attn->q_proj->weight}, {attn->k_proj->weight}, {attn->v_proj->weight}}));
  ASSERT_TRUE(fuses_projections_on(fd::device()));
  EXPECT_FALSE(fuses_projections_on(at::kCPU));
  const auto want = train_once(separate, Recompute::None);
  const auto got = train_once(flat, Recompute::None);
  EXPECT_LE(rel(got.loss, want.loss), 1e-6);
  for (const auto& [name, g] : want.grads) EXPECT_LE(rel(got.grads.at(name), g), 1e-5) << name;
  for (Recompute mode : {Recompute::Selective, Recompute::Full}) {
    const auto other = train_once(flat, mode);
    EXPECT_TRUE(at::equal(other.loss, got.loss)) << enum_name(mode);
    for (const auto& [name, g] : got.grads) EXPECT_TRUE(at::equal(other.grads.at(name), g)) << enum_name(mode) << " " << name;
  }
  // Without grad (evaluation, the recomputed layer's first pass): the same values.
  auto tokens = at::arange(3, 3 + 2 * 17, at::kLong).mul(5).remainder(c.vocab_size).view({2, 17});
  auto positions = default_positions(2, 17, 0, fd::device());
  auto with_grad = flat->forward(tokens.to(fd::device()), positions).detach().cpu();
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(flat->forward(tokens.to(fd::device()), positions).cpu(), with_grad));
}

// Decoding with a KV cache through the fused path (the keys rotated in the fused buffer, then
// appended): the last logits of prefill + one step equal one forward over the whole sequence.
TEST(FusedProjection, CachedDecodingThroughFlatWeightsEqualsTheFullForward) {
  const auto c = agenttune::testing::tiny_llama(61, 32, 48, 2, 4, 2);
  auto model = make_llama(c, 6, fd::device());
  flatten_layer_weights(model);
  at::NoGradGuard ng;
  auto tokens = at::arange(2, 14, at::kLong).mul(7).remainder(c.vocab_size).view({1, 12});
  auto on = [](const at::Tensor& t) { return t.to(fd::device()); };
  auto full = model->forward(on(tokens), default_positions(1, 12, 0, fd::device())).cpu();
  KVCache cache(c, 1, 12, at::kFloat, fd::device());
  model->forward(on(tokens.narrow(1, 0, 11)), default_positions(1, 11, 0, fd::device()), {}, &cache);
  auto last = model->forward(on(tokens.narrow(1, 11, 1)), default_positions(1, 1, 11, fd::device()), {}, &cache).cpu();
  EXPECT_LE(rel(last, full.narrow(1, 11, 1)), 1e-5);
}

// Qwen2's q/k/v biases and Qwen3's per-head q/k norms come between the matmul and RoPE: the fused
// matmul then only projects and the biases, norms and rotation follow. The same loss and gradients
// as separate weights, biases and norms included.
TEST(FusedProjection, BiasedAndNormedFamiliesTrainThroughFlatWeightsAsSeparateOnes) {
  for (ModelFamily f : {ModelFamily::Qwen2, ModelFamily::Qwen3}) {
    SCOPED_TRACE(enum_name(f));
    auto c = agenttune::testing::tiny_llama(61, 32, 48, 2, 4, 2);
    c.model_type = f;
    if (f == ModelFamily::Qwen3) c.head_dim = 16;
    auto make = [&] {
      auto m = make_llama(c, 5, fd::device());
      at::NoGradGuard ng;
      auto g = at::make_generator<at::CPUGeneratorImpl>(9);
      for (auto& p : m->named_parameters())  // biases and norms away from their 0 / 1 start
        if (p.value().dim() == 1) p.value().copy_(at::rand(p.value().sizes(), g, at::kFloat) - 0.5);
      return m;
    };
    auto separate = make(), flat = make();
    flatten_layer_weights(flat);
    auto& attn = flat->model->layers[0]->self_attn;
    ASSERT_TRUE(fusable({{attn->q_proj->weight}, {attn->k_proj->weight}, {attn->v_proj->weight}}));
    const auto want = train_once(separate, Recompute::None);
    const auto got = train_once(flat, Recompute::Selective);
    EXPECT_LE(rel(got.loss, want.loss), 1e-6);
    ASSERT_EQ(got.grads.size(), want.grads.size());
    for (const auto& [name, g] : want.grads) EXPECT_LE(rel(got.grads.at(name), g), 1e-5) << name;
  }
}

}  // namespace
