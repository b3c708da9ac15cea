#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>

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
Run run(LlamaForCausalLM& model, bool checkpointing, const at::Tensor& tokens, const at::Tensor& positions,
        const AttentionSpec& spec) {
  model->activation_checkpointing = checkpointing;
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

void expect_same(const Run& plain, const Run& ckpt) {
  EXPECT_LT((plain.loss - ckpt.loss).abs().item<double>(), 1e-6);
  ASSERT_EQ(plain.grads.size(), ckpt.grads.size());
  for (const auto& [name, g] : plain.grads) {
    ASSERT_TRUE(ckpt.grads.count(name)) << name;
    EXPECT_LT((g - ckpt.grads.at(name)).abs().max().item<double>(), 1e-6) << name;
    EXPECT_GT(g.abs().max().item<double>(), 0.0) << name;  // a zero grad would hide a lost one
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
  auto plain = run(model, false, tokens, positions, {});
  auto ckpt = run(model, true, tokens, positions, {});
  EXPECT_EQ(plain.grads.size(), model->parameters().size());
  expect_same(plain, ckpt);
}

TEST(ActivationCheckpoint, SameWithDocumentMask) {
  auto c = tiny_config();
  auto model = make_llama(c, 4);
  auto tokens = tokens_for(c);
  // Two documents per row; positions restart at each document as in packed training.
  auto doc_ids = at::cat({at::zeros({2, 8}, at::kLong), at::ones({2, 11}, at::kLong)}, 1);
  auto positions = at::cat({at::arange(8, at::kLong), at::arange(11, at::kLong)}).expand({2, 19}).contiguous();
  AttentionSpec spec{document_causal_mask(doc_ids)};
  auto plain = run(model, false, tokens, positions, spec);
  auto ckpt = run(model, true, tokens, positions, spec);
  expect_same(plain, ckpt);
  // The mask matters: without it the loss differs, so the comparison above is not vacuous.
  auto unmasked = run(model, true, tokens, positions, {});
  EXPECT_GT((unmasked.loss - ckpt.loss).abs().item<double>(), 1e-6);
}

TEST(ActivationCheckpoint, LayersGetGradsWhenEmbeddingsAreFrozen) {
  auto c = tiny_config();
  auto model = make_llama(c, 5);
  model->model->embed_tokens->weight.requires_grad_(false);
  auto tokens = tokens_for(c);
  auto positions = default_positions(2, 19, 0, at::kCPU);
  auto plain = run(model, false, tokens, positions, {});
  auto ckpt = run(model, true, tokens, positions, {});
  EXPECT_FALSE(plain.grads.count("model.embed_tokens.weight"));
  EXPECT_TRUE(plain.grads.count("model.layers.0.mlp.down_proj.weight"));
  expect_same(plain, ckpt);
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
