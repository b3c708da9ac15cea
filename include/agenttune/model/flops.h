#pragma once
// Training FLOPs per token, for MFU. Two conventions are reported side by side:
//   full:   6N + 12·L·d·T  (PaLM / Megatron / torchtitan: attention scores over all T keys)
//   causal: 6N +  6·L·d·T  (only the lower triangle of the score matrix is real work)
// N counts the weights of every matrix multiply: all decoder linears plus the output head
// (counted even when tied, since its matmul still runs); the embedding lookup and the norms do
// no multiply-adds worth counting. d = num_attention_heads * head_dim.
#include <cstdint>

#include "agenttune/model/llama_config.h"

namespace agenttune {

struct FlopsPerToken {
  double full = 0;
  double causal = 0;
  int64_t matmul_params = 0;  // N
};

FlopsPerToken training_flops_per_token(const LlamaConfig& c, int64_t seq_len);

// Every parameter the model holds (a tied head counted once), as named_parameters() would sum.
int64_t count_parameters(const LlamaConfig& c);
// The same in floating point (exact below 2^53): never overflows, so an absurd shape (a fuzzed
// config.json) can be sized before anything is allocated.
double count_parameters_approx(const LlamaConfig& c);
// One decoder layer's vectors: its two RMSNorms plus the family's biases and per-head q/k norms.
int64_t layer_vector_parameters(const LlamaConfig& c);

}  // namespace agenttune
