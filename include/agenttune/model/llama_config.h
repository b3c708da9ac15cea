#pragma once
// The shape of a Llama-family model: exactly the fields of a Hugging Face LlamaConfig that change
// the math. Reading and writing config.json lives in io/hf_config.h; the model only uses this.
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <array>
#include <optional>
#include <string_view>
#include <utility>
#include <string>
#include <vector>

#include "agenttune/config/scalars.h"
#include "agenttune/util/error.h"

namespace agenttune {

// Which Hugging Face architecture the config describes: one decoder, switches apart. llama: no
// biases unless attention_bias; qwen2 (Qwen2.5): biases on q/k/v only; qwen3: per-head RMSNorm on
// q and k before RoPE (q_norm/k_norm), biases on q/k/v/o only with attention_bias.
enum class ModelFamily { Llama, Qwen2, Qwen3 };

template <>
struct EnumNames<ModelFamily> {
  static constexpr std::array<std::pair<ModelFamily, std::string_view>, 3> values = {
      {{ModelFamily::Llama, "llama"}, {ModelFamily::Qwen2, "qwen2"}, {ModelFamily::Qwen3, "qwen3"}}};
};

// rope_scaling's type: linear (positions divided by the factor; factor 1 = none) or llama3
// (Llama-3.1's per-frequency rescaling: long wavelengths divided by the factor, short ones kept,
// the band between smoothed).
enum class RopeScalingType { Linear, Llama3 };

template <>
struct EnumNames<RopeScalingType> {
  static constexpr std::array<std::pair<RopeScalingType, std::string_view>, 2> values = {
      {{RopeScalingType::Linear, "linear"}, {RopeScalingType::Llama3, "llama3"}}};
};

struct LlamaConfig {
  ModelFamily model_type = ModelFamily::Llama;
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // < num_attention_heads means GQA (Llama-2-70B: 8)
  int64_t head_dim = 0;              // 0 = hidden_size / num_attention_heads
  int64_t max_position_embeddings = 4096;
  double rope_theta = 10000.0;
  RopeScalingType rope_scaling_type = RopeScalingType::Linear;
  double rope_scaling_factor = 1.0;  // rope_scaling's factor; 1.0 with linear = none
  // llama3 rope_scaling only (HF's low_freq_factor, high_freq_factor, original_max_position_embeddings).
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position_embeddings = 8192;
  // Biases on q/k/v/o (Llama's and Qwen3's attention_bias; Qwen2 has q/k/v biases always).
  bool attention_bias = false;
  double rms_norm_eps = 1e-5;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  // eos_token_id's list past its first entry (Llama-3.1-Instruct: [128001, 128008, 128009] keeps
  // 128008 and 128009 here), so it is written back as the list it was; empty = one id, the form
  // most configs have. YAML takes either form under the one key eos_token_id, as config.json does.
  std::vector<int64_t> extra_eos_token_ids;
  std::optional<int64_t> pad_token_id;
  c10::ScalarType dtype = c10::ScalarType::Float;  // storage/compute dtype of the weights

  // Every id that ends generation: eos_token_id, then the list's others.
  std::vector<int64_t> eos_token_ids() const {
    std::vector<int64_t> ids{eos_token_id};
    ids.insert(ids.end(), extra_eos_token_ids.begin(), extra_eos_token_ids.end());
    return ids;
  }
  int64_t resolved_head_dim() const {
    return head_dim > 0 ? head_dim : hidden_size / num_attention_heads;
  }
  bool linear_rope_scaled() const { return rope_scaling_type == RopeScalingType::Linear && rope_scaling_factor != 1.0; }
  // Which projections carry a bias, and whether q and k are normalised per head.
  bool qkv_bias() const { return attention_bias || model_type == ModelFamily::Qwen2; }
  bool o_bias() const { return attention_bias; }
  bool qk_norm() const { return model_type == ModelFamily::Qwen3; }
  // Positions the model is meant for: max_position_embeddings, stretched by linear RoPE scaling
  // (llama3 scaling's max_position_embeddings is already the extended context).
  int64_t max_positions() const {
    if (rope_scaling_type != RopeScalingType::Linear) return max_position_embeddings;
    return static_cast<int64_t>(static_cast<double>(max_position_embeddings) * rope_scaling_factor);
  }
  // Throws agenttune::Error naming `source` if the shape is inconsistent (heads not dividing, ...).
  void validate(const std::string& source) const;
  // Throws naming `source` when `seq_len` is past max_positions().
  void check_seq_len(int64_t seq_len, const std::string& source) const;
};

// "float32" | "bfloat16" | "float16" (and the aliases fp32/bf16/fp16/float/half) <-> ScalarType.
c10::ScalarType parse_dtype(const std::string& name);
std::string dtype_name(c10::ScalarType t);  // HF spelling: "float32", "bfloat16", "float16"

// LlamaConfig as a config section (config/reader.h's visit() convention): the keys are Hugging
// Face's config.json names, so a model block can be copied from a HF config. Reused by every config
// that builds a model (init, train).
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
  v("model_type", c.model_type);
  v("vocab_size", c.vocab_size);
  v("hidden_size", c.hidden_size);
  v("intermediate_size", c.intermediate_size);
  v("num_hidden_layers", c.num_hidden_layers);
  v("num_attention_heads", c.num_attention_heads);
  v("num_key_value_heads", c.num_key_value_heads);
  v("head_dim", c.head_dim);
  v("max_position_embeddings", c.max_position_embeddings);
  v("rope_theta", c.rope_theta);
  v("rope_scaling_type", c.rope_scaling_type);
  v("rope_scaling_factor", c.rope_scaling_factor);
  v("rope_low_freq_factor", c.rope_low_freq_factor);
  v("rope_high_freq_factor", c.rope_high_freq_factor);
  v("rope_original_max_position_embeddings", c.rope_original_max_position_embeddings);
  v("attention_bias", c.attention_bias);
  v("rms_norm_eps", c.rms_norm_eps);
  v("tie_word_embeddings", c.tie_word_embeddings);
  v("initializer_range", c.initializer_range);
  v("bos_token_id", c.bos_token_id);
  v.one_or_list("eos_token_id", c.eos_token_id, c.extra_eos_token_ids);
  v("pad_token_id", c.pad_token_id);
  v("dtype", c.dtype);
}

}  // namespace agenttune
