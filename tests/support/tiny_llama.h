#pragma once
// The tests' small Llama shape: a few layers, dims of tens, GQA. Tests that need another shape
// say so by the arguments they change.
#include "agenttune/model/llama_config.h"

namespace agenttune::testing {

inline LlamaConfig tiny_llama(int64_t vocab = 101, int64_t hidden = 32, int64_t ffn = 48, int64_t layers = 2,
                              int64_t heads = 4, int64_t kv_heads = 2, int64_t max_positions = 64) {
  LlamaConfig c;
  c.vocab_size = vocab, c.hidden_size = hidden, c.intermediate_size = ffn, c.num_hidden_layers = layers;
  c.num_attention_heads = heads, c.num_key_value_heads = kv_heads, c.max_position_embeddings = max_positions;
  return c;
}

}  // namespace agenttune::testing
