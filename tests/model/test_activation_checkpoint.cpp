#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <map>
#include <string>

#include "agenttune/model/activation_checkpoint.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"
#include "agenttune/util/error.h"

namespace agenttune {
namespace {

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 56;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  return c;
}

struct Run {
  at::Tensor loss;
  std::map<std::string, at::Tensor> grads;
};

// One forward + backward; grads are taken out of the model so the next run starts from none.
Run run(LlamaForCausalLM& model, Recompute mode, const at::Tensor& tokens, const at::Tensor& positions,
        const AttentionSpec& spec) {
  model->recompute = mode;
  auto logits = model->forward(tokens, positions, spec);
  auto targets = labels_to_targets(tokens);
  Run r{cross_entropy_sum(logits, targets) / count_trained(targets), {}};
  r.loss.backward();
  for (auto& p : model->named_parameters()) {
    if (p.value().grad().defined()) r.grads[p.key()] = p.value().grad().clone();
    p.value().mutable_grad().reset();
  }
  return r;
}

// Recomputing re-runs the same ops on the same inputs: the same bits, not merely close ones.
void expect_same(const Run& plain, const Run& other) {
  EXPECT_TRUE(at::equal(plain.loss, other.loss)) << plain.loss.item<double>() << " vs " << other.loss.item<double>();
  ASSERT_EQ(plain.grads.size(), other.grads.size());
  for (const auto& [name, g] : plain.grads) {
    ASSERT_TRUE(other.grads.count(name)) << name;
    EXPECT_TRUE(at::equal(g, other.grads.at(name)))
        << name << " differs by " << (g - other.grads.at(name)).abs().max().item<double>();
    EXPECT_GT(g.abs().max().item<double>(), 0.0) << name;  // a zero grad would hide a lost one
  }
}

// Each recompute mode against none, in fp32 and bf16.
void expect_modes_agree(LlamaForCausalLM& model, const at::Tensor& tokens, const at::Tensor& positions,
                        const AttentionSpec& spec = {}) {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    model->to(dtype);
    auto plain = run(model, Recompute::None, tokens, positions, spec);
    for (Recompute mode : {Recompute::Selective, Recompute::Full}) {
      SCOPED_TRACE(enum_name(mode) + " " + c10::toString(dtype));
      expect_same(plain, run(model, mode, tokens, positions, spec));
    }
  }
}

at::Tensor tokens_for(const LlamaConfig& c) {
  return at::arange(5, 5 + 2 * 19, at::kLong).mul(7).remainder(c.vocab_size).view({2, 19});
}

TEST(ActivationCheckpoint, SameLossAndGradsAsPlainForward) {
  auto c = tiny_config();
  auto model = make_llama(c, 3);
  auto tokens = tokens_for(c);
  auto positions = default_positions(2, 19, 0, at::kCPU);
  EXPECT_EQ(run(model, Recompute::None, tokens, positions, {}).grads.size(), model->parameters().size());
  expect_modes_agree(model, tokens, positions);
}

TEST(ActivationCheckpoint, SameWithDocumentMask) {
  auto c = tiny_config();
  auto model = make_llama(c, 4);
  auto tokens = tokens_for(c);
  // Two documents per row; positions restart at each document as in packed training.
  auto doc_ids = at::cat({at::zeros({2, 8}, at::kLong), at::ones({2, 11}, at::kLong)}, 1);
  auto positions = at::cat({at::arange(8, at::kLong), at::arange(11, at::kLong)}).expand({2, 19}).contiguous();
  AttentionSpec spec{document_causal_mask(doc_ids)};
  expect_modes_agree(model, tokens, positions, spec);
  // The mask matters: without it the loss differs, so the comparison above is not vacuous.
  auto masked = run(model, Recompute::Full, tokens, positions, spec);
  auto unmasked = run(model, Recompute::Full, tokens, positions, {});
  EXPECT_GT((unmasked.loss - masked.loss).abs().item<double>(), 1e-6);
}

TEST(ActivationCheckpoint, LayersGetGradsWhenEmbeddingsAndNormsAreFrozen) {
  auto c = tiny_config();
  auto model = make_llama(c, 5);
  model->model->embed_tokens->weight.requires_grad_(false);
  // A recomputed norm whose weight is frozen still passes the gradient to its input.
  model->model->layers[1]->post_attention_layernorm->weight.requires_grad_(false);
  auto tokens = tokens_for(c);
  auto positions = default_positions(2, 19, 0, at::kCPU);
  auto plain = run(model, Recompute::None, tokens, positions, {});
  EXPECT_FALSE(plain.grads.count("model.embed_tokens.weight"));
  EXPECT_FALSE(plain.grads.count("model.layers.1.post_attention_layernorm.weight"));
  EXPECT_TRUE(plain.grads.count("model.layers.0.mlp.down_proj.weight"));
  expect_modes_agree(model, tokens, positions);
}

// Selective keeps less than none: the norms' upcast copies, silu(gate) and down_proj's input are
// gone from the graph (the memory itself is measured in tests/plan and tests/fake_device).
TEST(ActivationCheckpoint, SelectiveLayerRecomputesItsNormsAndSwiGLU) {
  auto c = tiny_config();
  auto model = make_llama(c, 6);
  auto& layer = model->model->layers[0];
  auto x = at::randn({2, 5, c.hidden_size}).requires_grad_(true);
  auto rope = RotaryEmbedding(c).tables(default_positions(2, 5, 0, at::kCPU), at::kFloat);
  auto out = layer->forward(x, rope, {}, nullptr, /*selective=*/true);
  // The last op is the residual add of the MLP's output; that output is the recomputing Function's.
  std::vector<std::string> names;
  for (const auto& edge : out.grad_fn()->next_edges())
    if (edge.function) names.push_back(edge.function->name());
  EXPECT_NE(std::find_if(names.begin(), names.end(),
                         [](const std::string& n) { return n.find("SwiGLULinear") != std::string::npos; }),
            names.end())
      << fmt::format("{}", fmt::join(names, ", "));
  EXPECT_TRUE(at::equal(out, layer->forward(x, rope, {}, nullptr)));
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(layer->forward(x, rope, {}, nullptr, true), out));
}

TEST(ActivationCheckpoint, RecomputesOnlyWhenTraining) {
  auto c = tiny_config();
  auto model = make_llama(c, 6);
  auto& layer = model->model->layers[0];
  auto x = at::randn({2, 5, c.hidden_size}).requires_grad_(true);
  auto rope = RotaryEmbedding(c).tables(default_positions(2, 5, 0, at::kCPU), at::kFloat);
  auto out = checkpointed_layer(layer, x, rope, {});
  ASSERT_TRUE(out.grad_fn());
  EXPECT_NE(out.grad_fn()->name().find("CheckpointedLayer"), std::string::npos) << out.grad_fn()->name();
  EXPECT_TRUE(at::equal(out, layer->forward(x, rope, {}, nullptr)));
  at::NoGradGuard no_grad;
  auto inference = checkpointed_layer(layer, x, rope, {});
  EXPECT_FALSE(inference.requires_grad());
  EXPECT_TRUE(at::equal(inference, out));
}

}  // namespace
}  // namespace agenttune

namespace agenttune {
namespace {

TEST(GrowVocab, KeepsOldRowsAndStartsNewOnesAtTheMean) {
  LlamaConfig c;
  c.vocab_size = 50, c.hidden_size = 16, c.intermediate_size = 32, c.num_hidden_layers = 1;
  c.num_attention_heads = 2, c.num_key_value_heads = 1, c.max_position_embeddings = 32;
  auto m = make_llama(c, 3);
  auto grown = grow_vocab(m, 55);
  EXPECT_EQ(grown->config().vocab_size, 55);
  auto old_emb = m->model->embed_tokens->weight;
  auto new_emb = grown->model->embed_tokens->weight;
  EXPECT_TRUE(at::equal(new_emb.narrow(0, 0, 50), old_emb));
  EXPECT_TRUE(at::allclose(new_emb[52], old_emb.mean(0)));
  EXPECT_TRUE(at::allclose(grown->lm_head->weight[54], m->lm_head->weight.mean(0)));
  // Old tokens give the old logits on the old columns.
  at::NoGradGuard ng;
  auto tokens = at::arange(0, 10, at::kLong).unsqueeze(0);
  auto pos = default_positions(1, 10, 0, at::kCPU);
  EXPECT_TRUE(at::allclose(grown->forward(tokens, pos).narrow(-1, 0, 50), m->forward(tokens, pos)));
  EXPECT_THROW(grow_vocab(m, 40), Error);
}

}  // namespace
}  // namespace agenttune
