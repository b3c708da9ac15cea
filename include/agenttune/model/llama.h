#pragma once
// The Llama decoder as plain math: RMSNorm, RoPE (HF half-split layout), grouped-query attention
// through at::scaled_dot_product_attention, SwiGLU. Parameter names equal Hugging Face's
// (model.layers.0.self_attn.q_proj.weight, ...), so checkpoints map one to one. The model knows
// nothing of files, ranks or configs files; sharding wraps it from outside.
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <optional>

#include "agenttune/model/kv_cache.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/model/loss.h"
#include "agenttune/model/recompute.h"
#include "agenttune/model/rope.h"

namespace agenttune {

// What attention may see; attention_spec() decides it, the model obeys it. At most one of:
//   mask        bool, true = attend, broadcastable to [B, 1, T, S]
//   cu_seqlens  packed documents for the varlen flash kernel: the documents of all rows as
//               consecutive sequences (DocumentSpans::cu_seqlens, int32, on the device), with
//               the longest one in max_seqlen; only where varlen_attention_runs(), without a cache
// Neither: causal over the cached prefix plus the new tokens. A spec the model cannot follow is
// an error, never a silent fallback to plain causal attention (packed documents would meet).
struct AttentionSpec {
  std::optional<at::Tensor> mask;
  std::optional<at::Tensor> cu_seqlens;
  int64_t max_seqlen = 0;
};

// Whether the varlen flash kernel runs for activations on `device` in `dtype` (CUDA, bf16/fp16).
bool varlen_attention_runs(const c10::Device& device, c10::ScalarType dtype);

// The one decision of how a [B, T] batch attends, for a model computing on `device` in `dtype`.
// Undefined `doc_ids`: plain causal. Document ids (host [B, T], equal within a document inside
// a row): each document attends only to itself, through the varlen kernel where it runs (spans
// built on the host, no [B, T, T] mask), else through a dense document mask built on the device.
AttentionSpec attention_spec(const at::Tensor& doc_ids, const c10::Device& device, c10::ScalarType dtype);

// Where each document of a packed [B, T] batch starts and ends when the rows are laid end to end:
// what the varlen flash kernel takes instead of a dense mask. Built on the host from the batch's
// document ids (they are there before upload), so the kernel's max length needs no device sync.
struct DocumentSpans {
  at::Tensor cu_seqlens;  // int32 [documents + 1]: 0, end of the first document, ..., B * T
  int64_t max_seqlen = 0;
};
DocumentSpans document_spans(const at::Tensor& doc_ids);

// What every unit of one forward shares: rope tables, what attention may see, and, for a
// training forward, the targets (the head unit then returns the summed token loss, computed
// without materialising the logits) and how many of them are trained when the host knows it
// (then only those positions reach the head: SFT trains a fraction of its tokens).
struct UnitInputs {
  RopeTables rope;
  AttentionSpec spec;
  KVCache* cache = nullptr;
  at::Tensor targets;
  int64_t trained = -1;
  // Without targets: only these positions (int64 [N] on the device, flat indices into the batch's
  // B * T) reach the head, which then returns logits [N, V] (decoding reads the last position,
  // likelihood scoring the continuation's). Undefined: every position, [B, T, V].
  at::Tensor head_rows;
  // Where the fused loss hands the head weight's fp32 gradient instead of autograd (the sharding
  // engine's fp32 accumulation); unset, autograd gets it in the weight's dtype.
  GradSink head_weight_grad;
};

// Parameters are created uninitialised with these options (fp32 on the CPU by default): every way
// a model is built fills them (reset_parameters, load_weights, grow_vocab, a sharded model's
// gathered buffers). On the meta device a model is its shapes and names only, which is how a
// sharded run avoids holding a whole model in host memory.
using ParamOptions = at::TensorOptions;

// Llama's linear layer: `weight` [out, in] and, where the family has one (Qwen2's q/k/v,
// attention_bias), `bias` [out], as HF names and lays them out. It may carry a LoRA adapter
// (model/lora.h attaches it): `lora_A` [r, in] and `lora_B` [out, r], and then computes
// W x + b + scale * B A dropout(x) as PEFT's lora.Linear does (the base bias stays frozen).
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in, int64_t out, const ParamOptions& params, bool bias = false);
  // A projection over an existing weight and bias (registered as they are, not copied; an
  // undefined bias: none).
  explicit ProjectionImpl(const at::Tensor& weight, const at::Tensor& bias = {});
  at::Tensor forward(const at::Tensor& x);

  // Registers `lora_A` [rank, in] and `lora_B` [out, rank] (uninitialised, float32 on the
  // weight's device); the caller fills them.
  void attach_adapter(int64_t rank, double scale, double dropout);
  bool has_adapter() const { return lora_A.defined(); }
  // scale * B(A(dropout(x))) in the adapter's dtype (x is cast to it first, as PEFT does);
  // undefined without an adapter. Dropout follows the module's training flag, not grad mode: a
  // recomputed layer's first forward runs without grad and must drop as its recompute does.
  at::Tensor adapter_delta(const at::Tensor& x);

  // QLoRA (nf4): a projection over a frozen NF4-quantised weight of `shape` [out, in]. It holds
  // the weight's record bytes (quant/nf4.h), uint8, as `weight_nf4` and no `weight`; forward
  // dequantises just for its matmul (quant::nf4_linear). model/lora.h's quantize_projections makes them.
  ProjectionImpl(const at::Tensor& weight_nf4, std::vector<int64_t> shape, const at::Tensor& bias);
  bool quantized() const { return weight_nf4.defined(); }

  at::Tensor weight;
  at::Tensor bias;  // undefined: none
  at::Tensor lora_A, lora_B;
  double lora_scale = 0;
  double lora_dropout = 0;
  at::Tensor weight_nf4;
  std::vector<int64_t> nf4_shape;
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
  // `recompute`: keep only x (and the weight) for backward and normalise again there.
  at::Tensor forward(const at::Tensor& x, bool recompute = false);
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
  RMSNorm q_norm{nullptr}, k_norm{nullptr};  // Qwen3: per head, before RoPE; null otherwise

 private:
  // q and k rotated, v; [B, heads, T, head_dim] each. One matmul when the three weights are
  // consecutive rows of one buffer off the CPU (model/fused_projection.h), else one projection each.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> project_qkv(const at::Tensor& x, const RopeTables& rope);
  int64_t n_heads_, n_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const LlamaConfig& c, const ParamOptions& params = {});
  // `recompute`: keep only gate and up for backward; silu(gate) * up comes back there. gate and up
  // are one matmul when their weights are consecutive rows of one buffer off the CPU (model/fused_projection.h).
  at::Tensor forward(const at::Tensor& x, bool recompute = false);
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const LlamaConfig& c, const ParamOptions& params = {});
  // `selective`: Recompute::Selective's layer (the norms and the SwiGLU product recomputed in
  // backward); the same values and gradients either way.
  at::Tensor forward(const at::Tensor& x, const RopeTables& rope, const AttentionSpec& spec,
                     LayerCache* cache, bool selective = false);
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

  // The model is a chain of units: the embedding, each decoder layer, the final norm + head. This
  // is the one loop over them; `around`, when given, runs each unit instead (the sharding engine
  // gathers a unit's parameters, calls run_unit and frees them again).
  using UnitCall = std::function<at::Tensor(size_t unit, const at::Tensor& x)>;
  size_t num_units() const { return model->layers.size() + 2; }
  UnitInputs unit_inputs(const at::Tensor& positions, c10::ScalarType dtype, const AttentionSpec& spec = {},
                         KVCache* cache = nullptr) const;
  at::Tensor run_units(const at::Tensor& tokens, const UnitInputs& in, const UnitCall& around = {});
  // One unit; `checkpoint` recomputes a decoder layer whole in backward instead of keeping its
  // activations. A selective model's layers recompute their cheap parts whatever `checkpoint` says.
  at::Tensor run_unit(size_t unit, const at::Tensor& x, const UnitInputs& in, bool checkpoint);
  // Whether the model wants `unit` recomputed whole in backward when it trains (Recompute::Full,
  // layers only): the one place that decides, for the plain loop and the sharding engine alike.
  bool checkpointed(size_t unit) const;

  // tokens, positions: [B, T] int64. Returns logits [B, T, V] in the model dtype.
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions,
                     const AttentionSpec& spec = {}, KVCache* cache = nullptr);
  // The summed cross-entropy of the next-token targets ([B, T], kIgnoreIndex = not trained), fp32,
  // without the [B, T, V] logits; `trained` as in UnitInputs.
  at::Tensor loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& targets,
                      const AttentionSpec& spec = {}, int64_t trained = -1);
  at::Tensor logits(const at::Tensor& hidden);  // [.., D] -> [.., V], in the model dtype
  at::Tensor head_weight() const { return lm_head ? lm_head->weight : model->embed_tokens->weight; }

  // HF's initialisation: normal(0, initializer_range) for linears and embeddings, ones for norms.
  void reset_parameters(uint64_t seed);

  const LlamaConfig& config() const { return config_; }
  const RotaryEmbedding& rope() const { return rope_; }
  // How much of each decoder layer backward recomputes instead of keeping (model/recompute.h;
  // training only: applies when grad mode is on and no KV cache is used).
  Recompute recompute = Recompute::None;
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
