#pragma once
// LlamaConfig as a config section: the keys are Hugging Face's config.json names, so a model block
// can be copied from a HF config. Reused by every config that builds a model (init, train).
#include <c10/core/ScalarType.h>

#include "agenttune/config/scalars.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/util/error.h"

namespace agenttune {

template <>
struct ConfigScalar<c10::ScalarType> {
  static constexpr std::string_view expected = "a dtype (float32, bfloat16 or float16)";
  static std::optional<c10::ScalarType> parse(std::string_view s) {
    try {
      return parse_dtype(std::string(s));
    } catch (const Error&) {
      return std::nullopt;  // the reader reports it with file, line and key
    }
  }
  static std::string format(c10::ScalarType t) { return dtype_name(t); }
};

template <class V>
void visit(V& v, LlamaConfig& c) {
  v("vocab_size", c.vocab_size);
  v("hidden_size", c.hidden_size);
  v("intermediate_size", c.intermediate_size);
  v("num_hidden_layers", c.num_hidden_layers);
  v("num_attention_heads", c.num_attention_heads);
  v("num_key_value_heads", c.num_key_value_heads);
  v("head_dim", c.head_dim);
  v("max_position_embeddings", c.max_position_embeddings);
  v("rope_theta", c.rope_theta);
  v("rope_scaling_factor", c.rope_scaling_factor);
  v("rms_norm_eps", c.rms_norm_eps);
  v("tie_word_embeddings", c.tie_word_embeddings);
  v("initializer_range", c.initializer_range);
  v("bos_token_id", c.bos_token_id);
  v("eos_token_id", c.eos_token_id);
  v("pad_token_id", c.pad_token_id);
  v("dtype", c.dtype);
}

}  // namespace agenttune
