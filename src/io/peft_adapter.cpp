// PEFT adapter folders: the config keys as peft writes them, PEFT's tensor names, and a reader that
// refuses what our projections cannot compute exactly as PEFT does.
#include "agenttune/io/peft_adapter.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "agenttune/io/json_file.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/lora.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kPeftPrefix = "base_model.model.";

// Every key LoraConfig.save_pretrained writes in peft==kPeftVersion, with its default (the
// dataclass's, after save_pretrained forces inference_mode). Keys whose value we set are
// overwritten by write_peft_adapter; read_peft_adapter accepts every other key only at a value
// that leaves LoRA as we compute it (see check_default_key).
const nlohmann::json& peft_lora_defaults() {
  static const nlohmann::json d = nlohmann::json::parse(R"JSON({
    "alora_invocation_tokens": null,
    "alpha_pattern": {},
    "arrow_config": null,
    "auto_mapping": null,
    "base_model_name_or_path": null,
    "bias": "none",
    "corda_config": null,
    "ensure_weight_tying": false,
    "eva_config": null,
    "exclude_modules": null,
    "fan_in_fan_out": false,
    "inference_mode": true,
    "init_lora_weights": true,
    "kasa_config": null,
    "layer_replication": null,
    "layers_pattern": null,
    "layers_to_transform": null,
    "loftq_config": {},
    "lora_alpha": 8,
    "lora_bias": false,
    "lora_dropout": 0.0,
    "lora_ga_config": null,
    "megatron_config": null,
    "megatron_core": "megatron.core",
    "modules_to_save": null,
    "monteclora_config": null,
    "peft_type": "LORA",
    "peft_version": null,
    "qalora_group_size": 16,
    "r": 8,
    "rank_pattern": {},
    "revision": null,
    "target_modules": null,
    "target_parameters": null,
    "task_type": null,
    "trainable_token_indices": null,
    "use_bdlora": null,
    "use_dora": false,
    "use_qalora": false,
    "use_rslora": false,
    "velora_config": null
  })JSON");
  return d;
}

// Keys that describe the file, not the computation; any value is fine. megatron_core,
// qalora_group_size and layers_pattern only matter together with megatron_config, use_qalora and
// layers_to_transform, which are refused unless at their defaults.
const std::set<std::string>& informational_keys() {
  static const std::set<std::string> k = {"auto_mapping",  "base_model_name_or_path", "inference_mode",
                                          "megatron_core", "peft_version",            "qalora_group_size",
                                          "revision",      "layers_pattern"};
  return k;
}

// Why a key at a non-default value is refused, for the keys a user is likely to meet.
std::string why_unsupported(const std::string& key) {
  static const std::map<std::string, std::string> why = {
      {"use_dora", "DoRA adds a magnitude vector our projections do not have"},
      {"lora_bias", "a bias on lora_B, which our adapters do not have"},
      {"modules_to_save", "full trained copies of modules are not part of a LoRA adapter we can load"},
      {"rank_pattern", "one rank for every projection is supported, not a rank per module"},
      {"alpha_pattern", "one alpha for every projection is supported, not an alpha per module"},
      {"layers_to_transform", "adapters on every decoder layer are supported, not a subset"},
      {"layer_replication", "replicated layers change the model's depth"},
      {"exclude_modules", "give target_modules as the projection names instead"},
      {"trainable_token_indices", "trained embedding rows are not supported"},
      {"target_parameters", "LoRA on raw parameters (not nn.Linear modules) is not supported"},
      {"fan_in_fan_out", "Conv1D-style transposed weights (GPT-2) are not Llama's"},
      {"use_qalora", "QA-LoRA pools the input, which our adapters do not"},
      {"alora_invocation_tokens", "activated LoRA switches on mid-sequence, which our adapters do not"},
      {"megatron_config", "Megatron-parallel LoRA layers are not supported"},
      {"loftq_config", "LoftQ replaces the base weights with a quantised residual the folder does not hold"},
      {"corda_config", "CorDA replaces the base weights the adapter was made against"},
      {"arrow_config", "Arrow routing over several adapters is not supported"},
      {"ensure_weight_tying", "tied adapters on embeddings and head are not supported"},
  };
  auto it = why.find(key);
  return it == why.end() ? "our adapters do not implement it" : it->second;
}

// null, false, [] and {} all mean "not used" for the keys whose default is one of them.
bool is_empty(const nlohmann::json& v) {
  return v.is_null() || (v.is_boolean() && !v.get<bool>()) || (v.is_array() && v.empty()) ||
         (v.is_object() && v.empty());
}

[[noreturn]] void refuse(const std::string& where, const std::string& key, const nlohmann::json& v,
                         const std::string& why) {
  fail("{}: {} = {}: not supported ({})", where, key, v.dump(), why);
}

void check_default_key(const std::string& where, const std::string& key, const nlohmann::json& v) {
  const auto& defaults = peft_lora_defaults();
  if (!defaults.contains(key)) {
    if (is_empty(v)) return;
    refuse(where, key, v,
           fmt::format("a key peft {} does not write, so we cannot know what it changes; refusing rather than "
                       "ignoring it",
                       kPeftVersion));
  }
  const auto& d = defaults.at(key);
  if (v == d || (is_empty(d) && is_empty(v))) return;
  refuse(where, key, v, why_unsupported(key));
}

// PEFT matches a target against a module path by equality or by suffix, and writes the expanded
// full paths for target_modules "all-linear"; both name one of our seven projections.
std::string target_projection(const std::string& entry, const std::string& where) {
  for (auto t : kAdapterTargets) {
    if (entry == t) return entry;
    const std::string suffix = "." + std::string(t);
    if (entry.size() > suffix.size() && entry.compare(entry.size() - suffix.size(), suffix.size(), suffix) == 0)
      return std::string(t);
  }
  fail("{}: target_modules entry \"{}\" is not a decoder projection we can adapt (supported: q_proj, k_proj, "
       "v_proj, o_proj, gate_proj, up_proj, down_proj, or module paths ending in one of them)",
       where, entry);
}

std::vector<std::string> read_targets(const nlohmann::json& v, const std::string& where) {
  if (v.is_string())
    refuse(where, "target_modules", v, "a regular expression; list the projection names instead");
  if (!v.is_array() || v.empty()) fail("{}: target_modules must be a non-empty list of module names", where);
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) fail("{}: target_modules holds {}, not a module name", where, e.dump());
    auto t = target_projection(e.get<std::string>(), where);
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  }
  // Our order (q, k, v, o, gate, up, down), whatever order the set was saved in.
  std::vector<std::string> ordered;
  for (auto t : kAdapterTargets)
    if (std::find(out.begin(), out.end(), t) != out.end()) ordered.emplace_back(t);
  return ordered;
}

double read_number(const nlohmann::json& v, const std::string& key, const std::string& where) {
  if (!v.is_number()) fail("{}: {} = {}: expected a number", where, key, v.dump());
  return v.get<double>();
}

// The keys that carry the adapter's values (or may take other values than the default).
void read_value_key(const std::string& key, const nlohmann::json& v, PeftAdapter& a, const std::string& where) {
  auto& c = a.config;
  if (key == "peft_type") {
    if (v != "LORA") refuse(where, key, v, "only LoRA adapters are supported");
  } else if (key == "task_type") {
    if (!v.is_null() && v != "CAUSAL_LM") refuse(where, key, v, "adapters of a causal language model only");
  } else if (key == "r") {
    if (!v.is_number_integer() || v.get<int64_t>() < 1) fail("{}: r = {}: expected an integer >= 1", where, v.dump());
    c.rank = v.get<int64_t>();
  } else if (key == "lora_alpha") {
    c.alpha = read_number(v, key, where);
  } else if (key == "lora_dropout") {
    c.dropout = read_number(v, key, where);
  } else if (key == "use_rslora") {
    if (!v.is_boolean()) fail("{}: use_rslora = {}: expected true or false", where, v.dump());
    c.rslora = v.get<bool>();
  } else if (key == "target_modules") {
    c.target_modules = read_targets(v, where);
  } else if (key == "bias") {
    if (v != "none") refuse(where, key, v, "only bias \"none\": an adapter here trains no bias (a base bias stays frozen)");
  } else if (key == "init_lora_weights") {
    // Initialisations that only choose A and B's starting values leave a trained adapter an
    // ordinary one; those that rewrite the base weights need a base the folder does not hold.
    // (MiCA is a layer variant with a frozen B; LoRA-GA offsets the base weight.)
    static const std::set<std::string> plain = {"gaussian", "eva", "orthogonal"};
    if (!v.is_boolean() && !(v.is_string() && plain.count(v.get<std::string>())))
      refuse(where, key, v,
             "this initialisation rewrites the base model's weights, which the folder does not hold, or is a LoRA "
             "variant our projections do not compute");
  } else if (key == "eva_config") {
    // EVA only chooses the initial A (its rank redistribution shows up in rank_pattern, checked
    // there): the trained adapter is an ordinary one.
  } else if (key == "base_model_name_or_path") {
    if (!v.is_null() && !v.is_string()) fail("{}: base_model_name_or_path = {}: expected a string", where, v.dump());
    a.base_model = v.is_string() ? v.get<std::string>() : "";
  } else if (!informational_keys().count(key)) {
    check_default_key(where, key, v);
  }
}

PeftAdapter read_config(const fs::path& path) {
  const std::string where = path.string();
  auto j = read_json_file(path);
  if (!j.is_object()) fail("{}: expected a JSON object", where);
  for (const char* required : {"peft_type", "r", "lora_alpha", "target_modules"})
    if (!j.contains(required)) fail("{}: no \"{}\" (PEFT and vLLM need it)", where, required);
  PeftAdapter a;
  a.config.kind = AdapterKind::Lora;
  for (const auto& [key, v] : j.items()) read_value_key(key, v, a, where);
  a.config.validate(where);
  return a;
}

// One decoder projection's adapter matrix: layer, parent module and projection of a name.
const std::regex& peft_name_grammar() {
  static const std::regex re(R"(^base_model\.model\.(model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.(lora_A|lora_B))\.weight$)");
  return re;
}

bool parent_holds(const std::string& parent, const std::string& proj) {
  static const std::set<std::string> attn = {"q_proj", "k_proj", "v_proj", "o_proj"};
  static const std::set<std::string> mlp = {"gate_proj", "up_proj", "down_proj"};
  return parent == "self_attn" ? attn.count(proj) > 0 : mlp.count(proj) > 0;
}

std::string explain_foreign_tensor(const std::string& name) {
  if (name.find("lora_embedding_") != std::string::npos) return "an embedding adapter, which is not supported";
  if (name.find("lora_magnitude_vector") != std::string::npos) return "a DoRA magnitude vector, which is not supported";
  if (name.find(".base_layer.") != std::string::npos || name.find("modules_to_save") != std::string::npos)
    return "a full base weight (PEFT saves these for modules_to_save or a resized vocabulary), not an adapter";
  if (name.find("lora_B.bias") != std::string::npos) return "a bias on lora_B (lora_bias), which is not supported";
  return "not a lora_A / lora_B weight of a decoder projection (base_model.model.model.layers.N.self_attn|mlp.<proj>."
         "lora_A|lora_B.weight)";
}

}  // namespace

std::string peft_tensor_name(const std::string& ours) { return kPeftPrefix + ours + ".weight"; }

std::string our_tensor_name(const std::string& peft, const std::string& where) {
  std::smatch m;
  if (!std::regex_match(peft, m, peft_name_grammar()) || !parent_holds(m[3], m[4]))
    fail("{}: tensor {} is {}", where, peft, explain_foreign_tensor(peft));
  return m[1];
}

void write_peft_adapter(const fs::path& dir, const AdapterConfig& config, const std::string& base_model,
                        const NamedTensors& tensors, c10::ScalarType dtype) {
  if (!config.enabled()) fail("write_peft_adapter: the run has no adapter (model.adapter.kind none)");
  nlohmann::json j = peft_lora_defaults();
  j["task_type"] = "CAUSAL_LM";
  j["r"] = config.rank;
  // PEFT types lora_alpha as an int; a fractional alpha is written as the float it is.
  if (config.alpha == std::floor(config.alpha) && std::abs(config.alpha) < 1e15)
    j["lora_alpha"] = static_cast<int64_t>(config.alpha);
  else
    j["lora_alpha"] = config.alpha;
  j["lora_dropout"] = config.dropout;
  j["use_rslora"] = config.rslora;
  j["target_modules"] = config.target_modules;
  j["base_model_name_or_path"] = base_model.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model);
  j["peft_version"] = kPeftVersion;

  NamedTensors files;
  for (const auto& [name, t] : tensors) {
    auto peft = peft_tensor_name(name);
    our_tensor_name(peft, "write_peft_adapter");  // only projection adapters have a PEFT name
    files.emplace_back(peft, t.to(at::kCPU, dtype).contiguous());
  }
  fs::create_directories(dir);
  write_safetensors(dir / kWeightsFile, files);
  write_file_atomic(dir / kConfigFile, j.dump(2));
}

PeftAdapter read_peft_adapter(const fs::path& dir) {
  if (!fs::exists(dir / kConfigFile))
    fail("{}: no {} (not a PEFT adapter folder)", dir.string(), kConfigFile);
  auto a = read_config(dir / kConfigFile);
  const auto weights = dir / kWeightsFile;
  if (!fs::exists(weights))
    fail("{}: no {}{}", dir.string(), kWeightsFile,
         fs::exists(dir / "adapter_model.bin") ? " (adapter_model.bin is not read: save with safe_serialization=True)"
                                                : "");
  auto file = SafetensorsFile::open(weights);
  const std::string where = weights.string();
  std::map<std::string, int> halves;  // "<projection path>" -> 1 (A) | 2 (B)
  for (const auto& e : file.entries()) {
    auto ours = our_tensor_name(e.name, where);
    const std::string proj = ours.substr(0, ours.rfind('.'));
    const bool is_a = ours.compare(ours.size() - 6, 6, "lora_A") == 0;
    if (!a.config.targets(proj.substr(proj.rfind('.') + 1)))
      fail("{}: tensor {} adapts a projection that target_modules does not name", where, e.name);
    if (e.shape.size() != 2 || e.shape[is_a ? 0 : 1] != a.config.rank)
      fail("{}: tensor {} has shape [{}], expected {} (r = {})", where, e.name, fmt::join(e.shape, ", "),
           is_a ? "[r, in_features]" : "[out_features, r]", a.config.rank);
    halves[proj] |= is_a ? 1 : 2;
    a.tensors.emplace_back(ours, file.tensor(e.name).to(at::kFloat).clone());
  }
  if (a.tensors.empty()) fail("{}: holds no adapter tensor", where);
  for (const auto& [proj, have] : halves)
    if (have != 3) fail("{}: {} has lora_{} but not lora_{}", where, proj, have == 1 ? "A" : "B", have == 1 ? "B" : "A");
  return a;
}

void apply_peft_adapter(LlamaForCausalLM& model, const PeftAdapter& adapter, const std::string& where) {
  add_adapters(model, adapter.config);
  load_adapter_values(model, adapter.tensors, where);
}

void load_adapter_values(LlamaForCausalLM& model, const NamedTensors& tensors, const std::string& where) {
  std::map<std::string, at::Tensor> params;
  for (auto& p : model->named_parameters())
    if (is_adapter_parameter(p.key())) params.emplace(p.key(), p.value());
  at::NoGradGuard ng;
  for (const auto& [name, t] : tensors) {
    auto it = params.find(name);
    if (it == params.end())
      fail("{}: tensor {} has no adapter parameter in the model ({} layers)", where, peft_tensor_name(name),
           model->config().num_hidden_layers);
    if (it->second.sizes() != t.sizes())
      fail("{}: tensor {} has shape [{}], the model's projection needs [{}]", where, peft_tensor_name(name),
           fmt::join(t.sizes(), ", "), fmt::join(it->second.sizes(), ", "));
    it->second.copy_(t);
    params.erase(it);
  }
  if (!params.empty())
    fail("{}: no tensor for {} (and {} more adapter parameter(s) of the model): the adapter does not cover every "
         "layer of target_modules",
         where, peft_tensor_name(params.begin()->first), params.size() - 1);
}

}  // namespace agenttune
