#include "agenttune/model/llama_config.h"

#include <cmath>

#include "agenttune/util/error.h"

namespace agenttune {

void LlamaConfig::validate(const std::string& source) const {
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) fail("{}: '{}' must be positive, got {}", source, key, v);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("max_position_embeddings", max_position_embeddings);
  if (head_dim < 0) fail("{}: 'head_dim' must be positive (or 0 = hidden_size / num_attention_heads), got {}", source, head_dim);
  if (head_dim == 0 && hidden_size % num_attention_heads != 0)
    fail("{}: hidden_size {} is not divisible by num_attention_heads {}", source, hidden_size,
         num_attention_heads);
  if (num_attention_heads % num_key_value_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source,
         num_attention_heads, num_key_value_heads);
  if (resolved_head_dim() % 2 != 0)
    fail("{}: head_dim {} must be even for rotary embeddings", source, resolved_head_dim());
  // Negated comparisons so that NaN fails too.
  if (!(rope_theta > 0) || !std::isfinite(rope_theta))
    fail("{}: rope_theta must be a positive number, got {}", source, rope_theta);
  if (!(rope_scaling_factor >= 1.0) || !std::isfinite(rope_scaling_factor))
    fail("{}: rope_scaling.factor must be >= 1, got {}", source, rope_scaling_factor);
  if (rope_scaling_type == RopeScalingType::Llama3) {
    if (!(rope_low_freq_factor > 0) || !(rope_high_freq_factor > rope_low_freq_factor) ||
        !std::isfinite(rope_high_freq_factor))
      fail("{}: llama3 rope_scaling needs 0 < low_freq_factor < high_freq_factor, got {} and {}", source,
           rope_low_freq_factor, rope_high_freq_factor);
    positive("rope_scaling.original_max_position_embeddings", rope_original_max_position_embeddings);
  } else if (const LlamaConfig unset; rope_low_freq_factor != unset.rope_low_freq_factor ||
                                      rope_high_freq_factor != unset.rope_high_freq_factor ||
                                      rope_original_max_position_embeddings !=
                                          unset.rope_original_max_position_embeddings) {
    // Linear scaling never reads them: a value set there would silently do nothing.
    fail("{}: rope_low_freq_factor ({}), rope_high_freq_factor ({}) and rope_original_max_position_embeddings ({}) "
         "are llama3 rope scaling's, but rope_scaling_type is {}: set rope_scaling_type: llama3 or leave them out",
         source, rope_low_freq_factor, rope_high_freq_factor, rope_original_max_position_embeddings,
         enum_name(rope_scaling_type));
  }
  if (model_type == ModelFamily::Qwen2 && attention_bias)
    fail("{}: attention_bias is not a qwen2 setting (Qwen2 always has q/k/v biases and no o_proj bias)", source);
  if (!(rms_norm_eps > 0)) fail("{}: rms_norm_eps must be positive, got {}", source, rms_norm_eps);
}

void LlamaConfig::check_seq_len(int64_t seq_len, const std::string& source) const {
  if (seq_len <= max_positions()) return;
  fail("{}: data.seq_len {} is longer than the model's {} positions (max_position_embeddings {}{}); shorten "
       "data.seq_len or use a model with linear rope scaling that covers it",
       source, seq_len, max_positions(), max_position_embeddings,
       linear_rope_scaled() ? fmt::format(" x linear rope_scaling factor {}", rope_scaling_factor) : "");
}

c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float") return c10::ScalarType::Float;
  if (name == "bfloat16" || name == "bf16") return c10::ScalarType::BFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return c10::ScalarType::Half;
  fail("unknown dtype '{}': expected one of float32, bfloat16, float16", name);
}

std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Float: return "float32";
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::Half: return "float16";
    default: fail("dtype {} is not a model dtype (float32, bfloat16, float16)", c10::toString(t));
  }
}

}  // namespace agenttune
