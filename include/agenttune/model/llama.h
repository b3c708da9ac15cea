#pragma once
// The Llama decoder as plain math: RMSNorm, RoPE (HF half-split layout), grouped-query attention
// through at::scaled_dot_product_attention, SwiGLU. Parameter names equal Hugging Face's
// (model.layers.0.self_attn.q_proj.weight, ...), so checkpoints map one to one. The model knows
// nothing of files, ranks or configs files; sharding wraps it from outside.
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <optional>

#include "agenttune/model/kv_cache.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/model/rope.h"

namespace agenttune {

// What attention may see. `mask` (bool, true = attend, broadcastable to [B, 1, T, S]) wins when
// set; otherwise attention is causal over the cached prefix plus the new tokens.
struct AttentionSpec {
  std::optional<at::Tensor> mask;
};

// Parameters are created uninitialised with these options (fp32 on the CPU by default): every way
// a model is built fills them (reset_parameters, load_weights, grow_vocab, a sharded model's
// gathered buffers). On the meta device a model is its shapes and names only, which is how a
// sharded run avoids holding a whole model in host memory.
using ParamOptions = at::TensorOptions;

// Llama's bias-free linear layer: `weight` [out, in], as HF names and lays it out.
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in, int64_t out, const ParamOptions& params);
  at::Tensor forward(const at::Tensor& x) { return at::linear(x, weight); }
  at::Tensor weight;
};
TORCH_MODULE(Projection);

// The token embedding table, `weight` [vocab, hidden].
class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  TokenEmbeddingImpl(int64_t vocab, int64_t dim, const ParamOptions& params);
  at::Tensor forward(const at::Tensor& ids) { return at::embedding(weight, ids); }
  at::Tensor weight;
};
TORCH_MODULE(TokenEmbedding);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const ParamOptions& params = {});
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const LlamaConfig& c, const ParamOptions& params = {});
  at::Tensor forward(const at::Tensor& x, const RopeTables& rope, const AttentionSpec& spec,
                     LayerCache* cache);
  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const LlamaConfig& c, const ParamOptions& params = {});
  at::Tensor forward(const at::Tensor& x);
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const LlamaConfig& c, const ParamOptions& params = {});
  at::Tensor forward(const at::Tensor& x, const RopeTables& rope, const AttentionSpec& spec,
                     LayerCache* cache);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// HF's LlamaModel: embeddings, decoder layers, final norm.
class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& c, const ParamOptions& params = {});
  TokenEmbedding embed_tokens{nullptr};
  std::vector<DecoderLayer> layers;
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

// HF's LlamaForCausalLM. With a tied head there is no lm_head module: logits use the embedding.
class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& c, const ParamOptions& params = {});

  // tokens, positions: [B, T] int64. Returns final-norm hidden states [B, T, D].
  at::Tensor hidden_states(const at::Tensor& tokens, const at::Tensor& positions,
                           const AttentionSpec& spec = {}, KVCache* cache = nullptr);
  at::Tensor logits(const at::Tensor& hidden);  // [.., D] -> [.., V], in the model dtype
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions,
                     const AttentionSpec& spec = {}, KVCache* cache = nullptr) {
    return logits(hidden_states(tokens, positions, spec, cache));
  }

  // HF's initialisation: normal(0, initializer_range) for linears and embeddings, ones for norms.
  void reset_parameters(uint64_t seed);

  const LlamaConfig& config() const { return config_; }
  const RotaryEmbedding& rope() const { return rope_; }
  // Recompute each decoder layer in backward instead of keeping its activations (training only:
  // applies when grad mode is on and no KV cache is used).
  bool activation_checkpointing = false;
  LlamaModel model{nullptr};
  Projection lm_head{nullptr};  // null when tie_word_embeddings

 private:
  LlamaConfig config_;
  RotaryEmbedding rope_;
};
TORCH_MODULE(LlamaForCausalLM);

// Builds a model with the config's dtype on `device`, parameters HF-initialised from `seed`.
LlamaForCausalLM make_llama(const LlamaConfig& c, uint64_t seed = 0,
                            const at::Device& device = at::kCPU);

// The same model with a vocabulary grown to `new_vocab` (ChatML's added tokens): existing rows of
// the embedding and head are kept, new rows start at the mean of the old ones (as transformers'
// resize_token_embeddings does), so the new tokens begin as an average token, not noise.
LlamaForCausalLM grow_vocab(LlamaForCausalLM& model, int64_t new_vocab);

// positions [B, T] = past_length + arange(T).
at::Tensor default_positions(int64_t batch, int64_t length, int64_t past_length,
                             const at::Device& device);

// Bool mask [B, 1, T, T]: causal and, within each row, only inside the same document
// (doc_ids [B, T]). Used for packed sequences with document isolation.
at::Tensor document_causal_mask(const at::Tensor& doc_ids);

}  // namespace agenttune
