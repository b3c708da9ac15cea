#include "agenttune/model/flops.h"

namespace agenttune {

namespace {
int64_t layer_matmul_params(const LlamaConfig& c) {
  int64_t hd = c.resolved_head_dim();
  int64_t attn = c.hidden_size * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads);
  int64_t mlp = 3 * c.hidden_size * c.intermediate_size;
  return attn + mlp;
}
}  // namespace

FlopsPerToken training_flops_per_token(const LlamaConfig& c, int64_t seq_len) {
  FlopsPerToken f;
  f.matmul_params = c.num_hidden_layers * layer_matmul_params(c) + c.vocab_size * c.hidden_size;
  double d = static_cast<double>(c.num_attention_heads * c.resolved_head_dim());
  double attn = static_cast<double>(c.num_hidden_layers) * d * static_cast<double>(seq_len);
  f.full = 6.0 * static_cast<double>(f.matmul_params) + 12.0 * attn;
  f.causal = 6.0 * static_cast<double>(f.matmul_params) + 6.0 * attn;
  return f;
}

int64_t count_parameters(const LlamaConfig& c) {
  int64_t norms = (2 * c.num_hidden_layers + 1) * c.hidden_size;
  int64_t emb = c.vocab_size * c.hidden_size;
  int64_t head = c.tie_word_embeddings ? 0 : emb;
  return c.num_hidden_layers * layer_matmul_params(c) + norms + emb + head;
}

}  // namespace agenttune
