#include "agenttune/train/model_fit.h"

#include <yaml-cpp/yaml.h>

#include <array>

#include "agenttune/config/load.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/util/error.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

// The LlamaConfig keys that change the math (visit()'s names, so the error names the user's key).
constexpr std::array<const char*, 18> kArchitectureKeys = {
    "model_type",           "vocab_size",           "hidden_size",           "intermediate_size",
    "num_hidden_layers",    "num_attention_heads",  "num_key_value_heads",   "head_dim",
    "max_position_embeddings", "rope_theta",        "rope_scaling_type",     "rope_scaling_factor",
    "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_position_embeddings",
    "attention_bias",       "rms_norm_eps",         "tie_word_embeddings"};

// As the config writer spells each field: the text a user wrote, and equal exactly when the
// values are (doubles are written shortest-exact). head_dim 0 means the derived one.
YAML::Node architecture_fields(LlamaConfig c) {
  c.head_dim = c.resolved_head_dim();
  return YAML::Load(dump_config(c));
}

}  // namespace

void check_shape_matches(const LlamaConfig& shape, const LlamaConfig& architecture, const fs::path& file) {
  const YAML::Node given = architecture_fields(shape), actual = architecture_fields(architecture);
  for (const char* key : kArchitectureKeys) {
    const std::string a = given[key].Scalar(), b = actual[key].Scalar();
    if (a != b)
      fail("model.shape.{} is {}, but model.init_from {} has {} (its {}); remove model.shape (the folder decides "
           "the architecture) or make it equal",
           key, a, file.parent_path().string(), b, file.filename().string());
  }
}

LlamaConfig fitted_architecture(const TrainConfig& cfg, const std::string& where) {
  const fs::path& dir = cfg.model.init_from;
  LlamaConfig c;
  std::string source;  // what the seq_len error names: the key or the file that gave the architecture
  if (dir.empty()) {
    // validate() says so for a loaded config; a struct built in code reaches here unchecked.
    if (!cfg.model.shape) fail("set model.shape (the architecture of a fresh model) or model.init_from");
    c = *cfg.model.shape;
    source = where.empty() ? "model.shape" : where + " (model.shape)";
  } else {
    const auto format = detect_weight_format(dir);
    const auto file = dir / (format == WeightFormat::MetaPth ? "params.json" : "config.json");
    c = read_model_config(dir, format);
    if (cfg.model.shape) check_shape_matches(*cfg.model.shape, c, file);
    source = file.string();
  }
  c.check_seq_len(cfg.data.seq_len, source);
  return c;
}

TrainConfig with_fitted_architecture(const TrainConfig& cfg) {
  TrainConfig r = cfg;
  r.model.shape = fitted_architecture(cfg);
  r.model.shape->dtype = c10::ScalarType::Float;
  return r;
}

}  // namespace agenttune
