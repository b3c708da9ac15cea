#pragma once
// Autoregressive decoding with a KV cache: greedy when temperature is 0, else temperature plus
// nucleus (top-p) sampling from a seeded generator.
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "agenttune/model/llama.h"

namespace agenttune {

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0 = greedy
  double top_p = 1.0;
  std::vector<int64_t> stop_ids;  // generation ends after emitting one of these
  uint64_t seed = 0;
};

struct GenerationResult {
  std::vector<int64_t> tokens;  // new tokens only, including a final stop id if one was hit
  bool stopped = false;         // hit a stop id (vs. ran out of max_new_tokens)
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Warns (as transformers does, not refusing) when a prompt of `prompt` tokens plus max_new_tokens
// runs past the positions the model was trained for; `who` names the caller.
void warn_past_positions(const LlamaConfig& cfg, int64_t prompt, int64_t max_new_tokens, std::string_view who);

// `on_token` (optional) sees each new token as it is produced, for streaming output.
GenerationResult generate(LlamaForCausalLM& model, const std::vector<int64_t>& prompt,
                          const SamplingOptions& opts,
                          const std::function<void(int64_t)>& on_token = {});

// One sampling step on logits [V] (fp32): exposed for tests.
int64_t sample_token(const at::Tensor& logits, const SamplingOptions& opts, at::Generator& gen);

}  // namespace agenttune
