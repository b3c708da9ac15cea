// Meta's consolidated.NN.pth layout, presented under HF names. Shards are mapped, not read, so
// opening (and probing params) is cheap; merging happens per tensor when the loader asks.
#include "agenttune/io/meta_checkpoint.h"
#include "agenttune/io/json_file.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <regex>
#include <unordered_map>

#include "agenttune/io/torch_bin.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/strings.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> shard_files(const fs::path& dir) {
  static const std::regex pattern(R"(consolidated\.\d+\.pth)");
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (std::regex_match(e.path().filename().string(), pattern)) out.push_back(e.path());
  std::sort(out.begin(), out.end());  // zero-padded numbers: name order is rank order
  return out;
}

// How model-parallel shards recombine: column-parallel weights were split by output rows,
// row-parallel ones by input columns, the embedding by its feature columns; norms are copies.
enum class Merge { kRows, kCols, kReplicated };
enum class Permute { kNone, kQuery, kKey };

struct MetaName {
  std::string name;
  Merge merge;
  Permute permute = Permute::kNone;
};

std::optional<MetaName> to_meta(const std::string& hf) {
  static const std::unordered_map<std::string, MetaName> global = {
      {"model.embed_tokens.weight", {"tok_embeddings.weight", Merge::kCols}},
      {"model.norm.weight", {"norm.weight", Merge::kReplicated}},
      {"lm_head.weight", {"output.weight", Merge::kRows}}};
  static const std::unordered_map<std::string, MetaName> layer = {
      {"self_attn.q_proj.weight", {"attention.wq.weight", Merge::kRows, Permute::kQuery}},
      {"self_attn.k_proj.weight", {"attention.wk.weight", Merge::kRows, Permute::kKey}},
      {"self_attn.v_proj.weight", {"attention.wv.weight", Merge::kRows}},
      {"self_attn.o_proj.weight", {"attention.wo.weight", Merge::kCols}},
      {"mlp.gate_proj.weight", {"feed_forward.w1.weight", Merge::kRows}},
      {"mlp.up_proj.weight", {"feed_forward.w3.weight", Merge::kRows}},
      {"mlp.down_proj.weight", {"feed_forward.w2.weight", Merge::kCols}},
      {"input_layernorm.weight", {"attention_norm.weight", Merge::kReplicated}},
      {"post_attention_layernorm.weight", {"ffn_norm.weight", Merge::kReplicated}}};
  if (auto it = global.find(hf); it != global.end()) return it->second;
  static const std::regex pattern(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  if (!std::regex_match(hf, m, pattern)) return std::nullopt;
  auto it = layer.find(m[2].str());
  if (it == layer.end()) return std::nullopt;
  MetaName out = it->second;
  out.name = "layers." + m[1].str() + "." + out.name;
  return out;
}

std::vector<std::string> hf_names(int64_t layers) {
  std::vector<std::string> out = {"model.embed_tokens.weight"};
  for (int64_t i = 0; i < layers; ++i)
    for (const char* n : {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                          "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                          "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                          "input_layernorm.weight", "post_attention_layernorm.weight"})
      out.push_back(fmt::format("model.layers.{}.{}", i, n));
  out.push_back("model.norm.weight");
  out.push_back("lm_head.weight");
  return out;
}

using Shard = std::unordered_map<std::string, at::Tensor>;

Shard load_shard(const fs::path& path) {
  Shard s;
  for (auto& [n, t] : load_torch_state_dict(path)) s.emplace(n, std::move(t));
  return s;
}

class MetaCheckpoint final : public TensorSource {
 public:
  MetaCheckpoint(fs::path dir, const LlamaConfig& config)
      : dir_(std::move(dir)), config_(config), files_(shard_files(dir_)) {
    if (files_.empty()) fail("{}: no consolidated.NN.pth files", dir_.string());
    for (const auto& f : files_) shards_.push_back(load_shard(f));
    names_ = hf_names(config_.num_hidden_layers);
  }

  std::vector<std::string> names() const override { return names_; }
  bool contains(const std::string& name) const override {
    return std::find(names_.begin(), names_.end(), name) != names_.end();
  }
  std::string where(const std::string& name) const override {
    return fmt::format("{} ({} model-parallel shard{})", (files_[0]).string(), files_.size(),
                       files_.size() == 1 ? "" : "s");
  }

  at::Tensor get(const std::string& name) const override {
    auto meta = to_meta(name);
    if (!meta || !contains(name)) {
      std::string near = nearest(name, names_);
      fail("{}: no tensor named '{}'{}", dir_.string(), name,
           near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near));
    }
    std::vector<at::Tensor> parts;
    for (size_t i = 0; i < shards_.size(); ++i) {
      auto it = shards_[i].find(meta->name);
      if (it == shards_[i].end())
        fail("{}: tensor '{}' (for '{}') is missing", files_[i].string(), meta->name, name);
      if (it->second.dim() != (meta->merge == Merge::kReplicated ? 1 : 2))
        fail("{}: tensor '{}' has shape {}, expected a {}", files_[i].string(), meta->name,
             c10::str(it->second.sizes()), meta->merge == Merge::kReplicated ? "vector" : "matrix");
      parts.push_back(it->second);
      if (meta->merge == Merge::kReplicated) break;
    }
    at::Tensor w;
    try {
      w = meta->merge == Merge::kReplicated ? parts[0]
                                            : at::cat(parts, meta->merge == Merge::kRows ? 0 : 1);
    } catch (const c10::Error& ex) {
      fail("{}: cannot merge the {} shards of '{}': {}", dir_.string(), parts.size(), meta->name,
           ex.what_without_backtrace());
    }
    if (meta->permute != Permute::kNone) w = permute_rope(w, meta->permute, meta->name);
    return w;
  }

 private:
  // Meta interleaves the rotary pairs (x0,x1),(x2,x3)..; HF rotates halves (x_i, x_{i+d/2}).
  at::Tensor permute_rope(const at::Tensor& w, Permute which, const std::string& meta_name) const {
    int64_t heads =
        which == Permute::kQuery ? config_.num_attention_heads : config_.num_key_value_heads;
    int64_t rows = w.size(0), cols = w.size(1);
    if (heads <= 0 || rows % (2 * heads) != 0)
      fail("{}: '{}' has {} rows, not divisible into {} heads of even size", dir_.string(),
           meta_name, rows, heads);
    return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
  }

  fs::path dir_;
  LlamaConfig config_;
  std::vector<fs::path> files_;
  std::vector<Shard> shards_;
  std::vector<std::string> names_;
};

template <typename T>
T param(const nlohmann::json& j, const fs::path& file, const char* key, std::optional<T> def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (def) return *def;
    fail("{}: missing required key '{}'", file.string(), key);
  }
  if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) fail("{}: '{}' must be an integer", file.string(), key);
  } else {
    if (!it->is_number()) fail("{}: '{}' must be a number", file.string(), key);
  }
  return it->get<T>();
}

}  // namespace

bool is_meta_checkpoint_dir(const fs::path& dir) {
  return fs::is_regular_file(dir / "params.json") && !shard_files(dir).empty();
}

LlamaConfig read_meta_params(const fs::path& dir) {
  const fs::path file = dir / "params.json";
  nlohmann::json j = read_json_file(file);
  if (!j.is_object()) fail("{}: expected a JSON object", file.string());

  LlamaConfig c;
  c.hidden_size = param<int64_t>(j, file, "dim", std::nullopt);
  c.num_hidden_layers = param<int64_t>(j, file, "n_layers", std::nullopt);
  c.num_attention_heads = param<int64_t>(j, file, "n_heads", std::nullopt);
  c.num_key_value_heads = param<int64_t>(j, file, "n_kv_heads", c.num_attention_heads);
  c.rms_norm_eps = param<double>(j, file, "norm_eps", 1e-5);
  c.rope_theta = param<double>(j, file, "rope_theta", 10000.0);
  c.max_position_embeddings = 4096;  // Llama-2's trained context; params.json does not say
  c.tie_word_embeddings = false;

  // Exactly model.py's FeedForward sizing, truncations included (11008 for 7B, 28672 for 70B).
  int64_t multiple_of = param<int64_t>(j, file, "multiple_of", 256);
  if (multiple_of <= 0) fail("{}: 'multiple_of' must be positive", file.string());
  int64_t hidden = 2 * (4 * c.hidden_size) / 3;
  if (auto m = j.find("ffn_dim_multiplier"); m != j.end() && !m->is_null()) {
    if (!m->is_number()) fail("{}: 'ffn_dim_multiplier' must be a number", file.string());
    hidden = static_cast<int64_t>(m->get<double>() * static_cast<double>(hidden));
  }
  c.intermediate_size = multiple_of * ((hidden + multiple_of - 1) / multiple_of);

  // Shard 0 is only mapped, so asking it for the vocabulary and dtype costs a pickle parse.
  auto files = shard_files(dir);
  if (files.empty()) fail("{}: no consolidated.NN.pth files", dir.string());
  int64_t vocab = param<int64_t>(j, file, "vocab_size", -1);
  Shard first = load_shard(files[0]);
  auto emb = first.find("tok_embeddings.weight");
  if (emb == first.end() || emb->second.dim() != 2)
    fail("{}: no 2-D 'tok_embeddings.weight' to take the vocabulary size from",
         files[0].string());
  c.vocab_size = vocab > 0 ? vocab : emb->second.size(0);
  c.dtype = emb->second.scalar_type();
  c.validate(file.string());
  return c;
}

std::unique_ptr<TensorSource> open_meta_checkpoint(const fs::path& dir, const LlamaConfig& config) {
  return std::make_unique<MetaCheckpoint>(dir, config);
}

}  // namespace agenttune
