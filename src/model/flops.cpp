#include "agenttune/model/flops.h"

namespace agenttune {

namespace {
// T = int64_t for exact counts, double for sizing shapes whose count would overflow.
template <class T>
T layer_matmul_params(const LlamaConfig& c) {
  T hd = static_cast<T>(c.resolved_head_dim()), hidden = static_cast<T>(c.hidden_size);
  T attn = hidden * hd * (T{2} * static_cast<T>(c.num_attention_heads) + T{2} * static_cast<T>(c.num_key_value_heads));
  T mlp = T{3} * hidden * static_cast<T>(c.intermediate_size);
  return attn + mlp;
}

// A layer's vectors: its two RMSNorms, the biases and the per-head q/k norms the family has.
template <class T>
T layer_vector_params(const LlamaConfig& c) {
  const T hd = static_cast<T>(c.resolved_head_dim()), hidden = static_cast<T>(c.hidden_size);
  const T qkv = hd * (static_cast<T>(c.num_attention_heads) + T{2} * static_cast<T>(c.num_key_value_heads));
  return T{2} * hidden + (c.qkv_bias() ? qkv : T{0}) + (c.o_bias() ? hidden : T{0}) + (c.qk_norm() ? T{2} * hd : T{0});
}

template <class T>
T parameters(const LlamaConfig& c) {
  const T layers = static_cast<T>(c.num_hidden_layers), hidden = static_cast<T>(c.hidden_size);
  T norms = layers * layer_vector_params<T>(c) + hidden;
  T emb = static_cast<T>(c.vocab_size) * hidden;
  T head = c.tie_word_embeddings ? T{0} : emb;
  return layers * layer_matmul_params<T>(c) + norms + emb + head;
}
}  // namespace

FlopsPerToken training_flops_per_token(const LlamaConfig& c, int64_t seq_len) {
  FlopsPerToken f;
  f.matmul_params = c.num_hidden_layers * layer_matmul_params<int64_t>(c) + c.vocab_size * c.hidden_size;
  double d = static_cast<double>(c.num_attention_heads * c.resolved_head_dim());
  double attn = static_cast<double>(c.num_hidden_layers) * d * static_cast<double>(seq_len);
  f.full = 6.0 * static_cast<double>(f.matmul_params) + 12.0 * attn;
  f.causal = 6.0 * static_cast<double>(f.matmul_params) + 6.0 * attn;
  return f;
}

int64_t count_parameters(const LlamaConfig& c) { return parameters<int64_t>(c); }

double count_parameters_approx(const LlamaConfig& c) { return parameters<double>(c); }

int64_t layer_vector_parameters(const LlamaConfig& c) { return layer_vector_params<int64_t>(c); }

}  // namespace agenttune
