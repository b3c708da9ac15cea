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

// What one rope object says (transformers 5's rope_parameters or 4's rope_scaling): its linear
// scaling factor (1 = none) and the theta it carries, if any; each value checked where it is read.
struct RopeObject {
  double factor = 1.0;
  std::optional<double> theta;
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
  if (type == "linear") {
    read_req(*it, "factor", r.factor, where);
    if (!(r.factor >= 1.0) || !std::isfinite(r.factor))
      fail("{}: {}.factor must be >= 1, got {}", source, key, r.factor);
  } else if (type != "default") {
    fail("{}: {}: rope scaling type '{}' is not supported (supported: default, linear)", source, key, type);
  }
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
  if (params && scaling && params->factor != scaling->factor)
    fail("{}: rope_scaling has factor {} but rope_parameters has {} (transformers 4 reads the first, 5 the second); "
         "make them equal",
         source, scaling->factor, params->factor);
  if (theta) c.rope_theta = *theta;
  c.rope_scaling_factor = params ? params->factor : scaling ? scaling->factor : 1.0;
}

}  // namespace

LlamaConfig llama_config_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: expected a JSON object", source);
  std::string model_type = read_string(j, "model_type", "llama", source);
  if (model_type != "llama") fail("{}: model_type '{}' is not supported (expected 'llama')", source, model_type);
  if (std::string act = read_string(j, "hidden_act", "silu", source); act != "silu")
    fail("{}: hidden_act '{}' is not supported (expected 'silu')", source, act);
  if (read_flag(j, "attention_bias", source) || read_flag(j, "mlp_bias", source))
    fail("{}: attention_bias/mlp_bias are not supported (Llama-2 has no biases)", source);

  LlamaConfig c;
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
  read_opt(j, "eos_token_id", c.eos_token_id, source);
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
  json rope_params = {{"rope_theta", c.rope_theta},
                      {"rope_type", c.rope_scaling_factor != 1.0 ? "linear" : "default"}};
  json rope_scaling = nullptr;
  if (c.rope_scaling_factor != 1.0) {
    rope_params["factor"] = c.rope_scaling_factor;
    rope_scaling = {{"type", "linear"}, {"rope_type", "linear"}, {"factor", c.rope_scaling_factor}};
  }
  return json{{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"attention_bias", false},
              {"attention_dropout", 0.0},
              {"mlp_bias", false},
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
              {"eos_token_id", c.eos_token_id},
              {"pad_token_id", c.pad_token_id ? json(*c.pad_token_id) : json(nullptr)},
              {"pretraining_tp", 1},
              {"use_cache", true},
              {"dtype", dtype_name(c.dtype)},
              {"torch_dtype", dtype_name(c.dtype)}};
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
