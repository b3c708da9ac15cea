#include "agenttune/io/hf_config.h"
#include "agenttune/io/json_file.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <optional>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

using nlohmann::json;

namespace {

// Reads j[key] as T when present (and not null); type errors name file and key.
template <typename T>
bool read_opt(const json& j, const char* key, T& out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  bool ok = std::is_same_v<T, bool> ? it->is_boolean()
            : std::is_integral_v<T> ? it->is_number_integer()
                                    : it->is_number();
  if (!ok) fail("{}: key '{}' has the wrong type: expected {}, got {}", source, key,
                std::is_same_v<T, bool> ? "a boolean" : std::is_integral_v<T> ? "an integer" : "a number",
                it->dump());
  out = it->get<T>();
  return true;
}

template <typename T>
void read_req(const json& j, const char* key, T& out, const std::string& source) {
  if (!read_opt(j, key, out, source)) fail("{}: required key '{}' is missing", source, key);
}

// j[key] as a string, `fallback` when absent or null; any other type names the key.
std::string read_string(const json& j, const char* key, const std::string& fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) fail("{}: key '{}' has the wrong type: expected a string, got {}", source, key, it->dump());
  return it->get<std::string>();
}

bool read_flag(const json& j, const char* key, const std::string& source) {
  bool v = false;
  read_opt(j, key, v, source);
  return v;
}

// Negated comparisons so that NaN fails too.
double positive_theta(double theta, const std::string& source, const std::string& key) {
  if (!(theta > 0) || !std::isfinite(theta)) fail("{}: {} must be a positive number, got {}", source, key, theta);
  return theta;
}

// What one rope object says (transformers 5's rope_parameters or 4's rope_scaling): its scaling
// (type linear with factor 1 = none) and the theta it carries, if any; each value checked where it
// is read.
struct RopeObject {
  RopeScalingType type = RopeScalingType::Linear;
  double factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  std::optional<double> theta;
  bool same_scaling(const RopeObject& o) const {
    return type == o.type && factor == o.factor && low_freq_factor == o.low_freq_factor &&
           high_freq_factor == o.high_freq_factor && original_max_position_embeddings == o.original_max_position_embeddings;
  }
  std::string describe() const {
    if (type == RopeScalingType::Linear) return fmt::format("factor {}", factor);
    return fmt::format("llama3 factor {}, low_freq_factor {}, high_freq_factor {}, original_max_position_embeddings {}",
                       factor, low_freq_factor, high_freq_factor, original_max_position_embeddings);
  }
};

std::optional<RopeObject> read_rope_object(const json& j, const std::string& key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_object())
    fail("{}: key '{}' must be an object such as {{\"rope_type\": \"linear\", \"factor\": 2.0}} or null, got {}",
         source, key, it->dump());
  const std::string where = fmt::format("{} ({})", source, key);
  RopeObject r;
  if (double theta = 0; read_opt(*it, "rope_theta", theta, where)) r.theta = positive_theta(theta, source, key + ".rope_theta");
  std::string type = read_string(*it, "rope_type", read_string(*it, "type", "default", where), where);
  if (type == "default") return r;
  if (type == "linear") {
    read_req(*it, "factor", r.factor, where);
  } else if (type == "llama3") {
    r.type = RopeScalingType::Llama3;
    read_req(*it, "factor", r.factor, where);
    read_req(*it, "low_freq_factor", r.low_freq_factor, where);
    read_req(*it, "high_freq_factor", r.high_freq_factor, where);
    read_req(*it, "original_max_position_embeddings", r.original_max_position_embeddings, where);
  } else {
    fail("{}: {}: rope scaling type '{}' is not supported (supported: default, linear, llama3)", source, key, type);
  }
  if (!(r.factor >= 1.0) || !std::isfinite(r.factor)) fail("{}: {}.factor must be >= 1, got {}", source, key, r.factor);
  return r;
}

// transformers 4 reads rope_theta and rope_scaling, transformers 5 rope_parameters. A file with
// both spellings must say the same thing in each: otherwise the two versions run different models,
// and an edit to the spelling agenttune did not read would pass unnoticed (a rope_theta of 0 beside
// rope_parameters' 10000 loaded as 10000).
void read_rope(const json& j, LlamaConfig& c, const std::string& source) {
  std::optional<double> theta;
  if (double top = 0; read_opt(j, "rope_theta", top, source)) theta = positive_theta(top, source, "rope_theta");
  const auto params = read_rope_object(j, "rope_parameters", source);
  const auto scaling = read_rope_object(j, "rope_scaling", source);
  if (params && params->theta) {
    if (theta && *theta != *params->theta)
      fail("{}: rope_theta is {} but rope_parameters.rope_theta is {} (transformers 4 reads the first, 5 the "
           "second); make them equal",
           source, *theta, *params->theta);
    theta = params->theta;
  }
  if (params && scaling && !params->same_scaling(*scaling))
    fail("{}: rope_scaling has {} but rope_parameters has {} (transformers 4 reads the first, 5 the second); "
         "make them equal",
         source, scaling->describe(), params->describe());
  if (theta) c.rope_theta = *theta;
  const RopeObject r = params ? *params : scaling ? *scaling : RopeObject{};
  c.rope_scaling_type = r.type;
  c.rope_scaling_factor = r.factor;
  c.rope_low_freq_factor = r.low_freq_factor;
  c.rope_high_freq_factor = r.high_freq_factor;
  c.rope_original_max_position_embeddings = r.original_max_position_embeddings;
}

// model_type and the switches of its family; anything the one decoder does not compute is refused
// by name.
void read_family(const json& j, LlamaConfig& c, const std::string& source) {
  const std::string model_type = read_string(j, "model_type", "llama", source);
  const auto family = parse_enum<ModelFamily>(model_type);
  if (!family)
    fail("{}: model_type '{}' is not supported (supported: {})", source, model_type, enum_name_list<ModelFamily>());
  c.model_type = *family;
  if (read_flag(j, "mlp_bias", source)) fail("{}: mlp_bias is not supported (no supported family has MLP biases)", source);
  // Qwen2's q/k/v biases come with the model type; its config has no attention_bias, and transformers'
  // Qwen2 ignores one, so `true` (an o_proj bias) would be dropped by both: refused.
  if (c.model_type != ModelFamily::Qwen2)
    c.attention_bias = read_flag(j, "attention_bias", source);
  else if (read_flag(j, "attention_bias", source))
    fail("{}: attention_bias is true, but qwen2 has q/k/v biases always and no o_proj bias (transformers' Qwen2 "
         "ignores the key); remove it or set it false", source);
  if (read_flag(j, "use_sliding_window", source))
    fail("{}: use_sliding_window is true: sliding-window attention is not supported", source);
  if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) fail("{}: key 'layer_types' must be a list of attention types, got {}", source, it->dump());
    for (const auto& t : *it)
      if (t != "full_attention")
        fail("{}: layer_types has {}: only full_attention layers are supported", source, t.dump());
  }
}

// eos_token_id: one id, or a list (Llama-3.1-Instruct's [128001, 128008, 128009]) whose first entry
// is eos_token_id and the rest kept to be written back.
void read_eos(const json& j, LlamaConfig& c, const std::string& source) {
  const auto ids = eos_token_ids_from_json(j, source);
  if (!ids) return;
  c.eos_token_id = ids->front();
  c.extra_eos_token_ids.assign(ids->begin() + 1, ids->end());
}

json eos_json(const LlamaConfig& c) {
  return c.extra_eos_token_ids.empty() ? json(c.eos_token_id) : json(c.eos_token_ids());
}

const char* architecture(ModelFamily f) {
  switch (f) {
    case ModelFamily::Llama: return "LlamaForCausalLM";
    case ModelFamily::Qwen2: return "Qwen2ForCausalLM";
    case ModelFamily::Qwen3: return "Qwen3ForCausalLM";
  }
  return "LlamaForCausalLM";
}

// rope_parameters (transformers 5) and rope_scaling (4; null without scaling) for the config.
std::pair<json, json> rope_json(const LlamaConfig& c) {
  json params = {{"rope_theta", c.rope_theta}, {"rope_type", "default"}};
  json scaling = nullptr;
  if (c.rope_scaling_type == RopeScalingType::Llama3) {
    scaling = {{"rope_type", "llama3"},
               {"factor", c.rope_scaling_factor},
               {"low_freq_factor", c.rope_low_freq_factor},
               {"high_freq_factor", c.rope_high_freq_factor},
               {"original_max_position_embeddings", c.rope_original_max_position_embeddings}};
  } else if (c.rope_scaling_factor != 1.0) {
    scaling = {{"type", "linear"}, {"rope_type", "linear"}, {"factor", c.rope_scaling_factor}};
  }
  if (!scaling.is_null())
    for (const auto& [k, v] : scaling.items())
      if (k != "type") params[k] = v;
  return {params, scaling};
}

}  // namespace

std::optional<std::vector<int64_t>> eos_token_ids_from_json(const json& j, const std::string& source) {
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_number_integer()) return std::vector<int64_t>{it->get<int64_t>()};
  if (!it->is_array()) fail("{}: key 'eos_token_id' must be an id or a list of ids, got {}", source, it->dump());
  if (it->empty()) fail("{}: key 'eos_token_id' is an empty list (expected an id or a list of ids)", source);
  std::vector<int64_t> ids;
  for (const auto& v : *it) {
    if (!v.is_number_integer())
      fail("{}: key 'eos_token_id' must hold integers, got {} in {}", source, v.dump(), it->dump());
    ids.push_back(v.get<int64_t>());
  }
  return ids;
}

LlamaConfig llama_config_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: expected a JSON object", source);
  if (std::string act = read_string(j, "hidden_act", "silu", source); act != "silu")
    fail("{}: hidden_act '{}' is not supported (expected 'silu')", source, act);

  LlamaConfig c;
  read_family(j, c, source);
  read_req(j, "vocab_size", c.vocab_size, source);
  read_req(j, "hidden_size", c.hidden_size, source);
  read_req(j, "intermediate_size", c.intermediate_size, source);
  read_req(j, "num_hidden_layers", c.num_hidden_layers, source);
  read_req(j, "num_attention_heads", c.num_attention_heads, source);
  c.num_key_value_heads = c.num_attention_heads;  // absent in Llama-1/2-7B configs: MHA
  read_opt(j, "num_key_value_heads", c.num_key_value_heads, source);
  read_opt(j, "head_dim", c.head_dim, source);
  read_opt(j, "max_position_embeddings", c.max_position_embeddings, source);
  read_opt(j, "rms_norm_eps", c.rms_norm_eps, source);
  read_opt(j, "tie_word_embeddings", c.tie_word_embeddings, source);
  read_opt(j, "initializer_range", c.initializer_range, source);
  read_opt(j, "bos_token_id", c.bos_token_id, source);
  read_eos(j, c, source);
  int64_t pad = 0;
  if (read_opt(j, "pad_token_id", pad, source)) c.pad_token_id = pad;
  read_rope(j, c, source);
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) {
      try {
        c.dtype = parse_dtype(it->get<std::string>());
      } catch (const Error& e) {
        fail("{}: key '{}': {}", source, key, e.what());
      }
      break;
    }
  }
  c.validate(source);
  return c;
}

json llama_config_to_json(const LlamaConfig& c) {
  const auto [rope_params, rope_scaling] = rope_json(c);
  json j{{"architectures", {architecture(c.model_type)}},
         {"model_type", enum_name(c.model_type)},
         {"attention_dropout", 0.0},
         {"hidden_act", "silu"},
         {"vocab_size", c.vocab_size},
         {"hidden_size", c.hidden_size},
         {"intermediate_size", c.intermediate_size},
         {"num_hidden_layers", c.num_hidden_layers},
         {"num_attention_heads", c.num_attention_heads},
         {"num_key_value_heads", c.num_key_value_heads},
         {"head_dim", c.resolved_head_dim()},
         {"max_position_embeddings", c.max_position_embeddings},
         {"rms_norm_eps", c.rms_norm_eps},
         {"rope_theta", c.rope_theta},
         {"rope_scaling", rope_scaling},
         {"rope_parameters", rope_params},
         {"tie_word_embeddings", c.tie_word_embeddings},
         {"initializer_range", c.initializer_range},
         {"bos_token_id", c.bos_token_id},
         {"eos_token_id", eos_json(c)},
         {"pad_token_id", c.pad_token_id ? json(*c.pad_token_id) : json(nullptr)},
         {"use_cache", true},
         {"dtype", dtype_name(c.dtype)},
         {"torch_dtype", dtype_name(c.dtype)}};
  if (c.model_type == ModelFamily::Llama) j.update({{"mlp_bias", false}, {"pretraining_tp", 1}});
  if (c.model_type != ModelFamily::Qwen2) j["attention_bias"] = c.attention_bias;
  if (c.model_type != ModelFamily::Llama)  // what Qwen configs carry: full attention in every layer
    j.update({{"use_sliding_window", false}, {"sliding_window", nullptr}, {"max_window_layers", c.num_hidden_layers}});
  return j;
}

LlamaConfig read_hf_config(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path))
    fail("{}: not found (a Hugging Face model folder needs config.json)", path.string());
  json j = read_json_file(path);
  return llama_config_from_json(j, path.string());
}

void write_hf_config(const std::filesystem::path& path, const LlamaConfig& c) {
  write_file_atomic(path, llama_config_to_json(c).dump(2) + "\n");
}

}  // namespace agenttune
