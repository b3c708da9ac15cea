#include "agenttune/train/train_state.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <set>

#include "agenttune/io/hf_config.h"
#include "agenttune/train/train_config.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace {

// The default CPU generator's state as hex: training draws no random numbers today (no dropout),
// but a resumed run must continue any stream a later feature adds exactly where it stopped.
std::string rng_state_hex() {
  auto state = at::detail::getDefaultCPUGenerator().get_state();
  static const char* digits = "0123456789abcdef";
  std::string out;
  auto* p = state.data_ptr<uint8_t>();
  for (int64_t i = 0; i < state.numel(); ++i) out += digits[p[i] >> 4], out += digits[p[i] & 15];
  return out;
}

void set_rng_state_hex(const std::string& hex) {
  auto state = at::empty({static_cast<int64_t>(hex.size() / 2)}, at::kByte);
  auto* p = state.data_ptr<uint8_t>();
  auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i + 1 < hex.size(); i += 2) p[i / 2] = static_cast<uint8_t>(nib(hex[i]) << 4 | nib(hex[i + 1]));
  auto gen = at::detail::getDefaultCPUGenerator();  // a handle; set_state is not const
  gen.set_state(state);
}

}  // namespace

std::filesystem::path save_train_state(CheckpointStore& store, parallel::ShardedModel& model, const AdamW& opt,
                                       const Mixture& data, const TrainProgress& p, const nlohmann::json& config,
                                       parallel::ProcessGroup& dist) {
  CheckpointWrite w;
  w.step = p.step;
  w.rank = dist.rank();
  w.world_size = dist.world_size();
  for (auto& [name, t] : model.shard_params()) w.tensors.emplace_back("flat." + name, t.detach().cpu());
  for (auto& [name, t] : opt.state()) w.tensors.emplace_back("optim." + name, t.detach().cpu());
  store.stage(w);
  dist.barrier("checkpoint staged");
  std::filesystem::path dir = store.root() / CheckpointStore::folder_name(p.step);
  if (dist.is_main()) {
    nlohmann::json meta = {{"step", p.step},
                           {"tokens", p.tokens},
                           {"nonfinite_in_a_row", p.nonfinite_in_a_row},
                           {"loss_window", p.loss_window},
                           {"data_plan", data_plan_json(data)},
                           {"data", data.state().to_json()},
                           {"rng", {{"cpu", rng_state_hex()}}},
                           {"model_config", llama_config_to_json(model.model()->config())},
                           {"layout", model.layout()},
                           {"config", config}};
    // An adapter checkpoint holds no base: it records which one it was trained on.
    if (!model.base_fingerprint().empty()) meta["base"] = {{"fingerprint", model.base_fingerprint()}};
    dir = store.commit(p.step, meta, dist.world_size());
  }
  dist.barrier("checkpoint committed");
  return dir;
}

CheckpointGroups::CheckpointGroups(const LoadedCheckpoint& ck) : dir_(ck.dir) {
  if (!ck.meta.contains("layout")) fail("{}/meta.json: no shard layout", ck.dir.string());
  layout_ = ck.meta["layout"];
  int shard_world = layout_.value("shard_world", 1);
  for (int r = 0; r < shard_world; ++r) ranks_.push_back(open_rank_tensors(ck.dir, r));
}

at::Tensor CheckpointGroups::full(const std::string& prefix, const std::string& group, int64_t numel) const {
  std::vector<at::Tensor> parts;
  for (const auto& src : ranks_) parts.push_back(src->get(prefix + group).reshape({-1}));
  auto all = parts.size() == 1 ? parts[0] : at::cat(parts);
  if (all.numel() < numel)
    fail("{}: '{}{}' holds {} elements across {} rank file(s), the layout says {}", dir_.string(), prefix, group,
         all.numel(), ranks_.size(), numel);
  return all.narrow(0, 0, numel);
}

nlohmann::json data_plan_json(const Mixture& data) {
  const MixtureOptions& o = data.options();
  nlohmann::json sources = nlohmann::json::array();
  for (size_t i = 0; i < o.sources.size(); ++i) {
    // Sizes rather than paths: a corpus may move between clusters, but not change.
    const auto& m = data.manifest(i);
    sources.push_back(
        {{"name", o.sources[i].name}, {"weight", o.sources[i].weight}, {"documents", m.documents}, {"tokens", m.tokens}});
  }
  nlohmann::json plan = {{"seq_len", o.seq_len},
                         {"seed", o.seed},
                         {"validation_fraction", o.validation_fraction},
                         {"attention", ConfigScalar<AttentionMode>::format(o.attention)},
                         {"packing", ConfigScalar<Packing>::format(o.packing)},
                         {"sources", sources}};
  // Only conversations are fitted, so a pretraining run's plan (and its older checkpoints) is
  // unaffected by the setting.
  bool conversations = false;
  for (size_t i = 0; i < o.sources.size(); ++i) conversations = conversations || data.manifest(i).has_mask;
  if (conversations) plan["overlength"] = ConfigScalar<Overlength>::format(o.overlength);
  return plan;
}

std::string first_difference(const nlohmann::json& a, const nlohmann::json& b, const std::string& path) {
  if (a.is_object() && b.is_object()) {
    std::set<std::string> keys;
    for (const auto& [k, v] : a.items()) keys.insert(k);
    for (const auto& [k, v] : b.items()) keys.insert(k);
    for (const auto& k : keys) {
      const std::string sub = path.empty() ? k : path + "." + k;
      if (!a.contains(k) || !b.contains(k)) return sub;
      if (auto d = first_difference(a[k], b[k], sub); !d.empty()) return d;
    }
    return "";
  }
  if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
      if (auto d = first_difference(a[i], b[i], fmt::format("{}[{}]", path, i)); !d.empty()) return d;
    return a.size() == b.size() ? "" : fmt::format("{} (length)", path);
  }
  return a == b ? "" : (path.empty() ? "(value)" : path);
}

namespace {

std::string value_at(const nlohmann::json& j, const std::string& dotted) {
  // "sources[1].weight" -> /sources/1/weight; a path that does not exist prints as "absent".
  std::string ptr;
  for (char c : dotted) ptr += (c == '.' || c == '[') ? '/' : (c == ']' ? '\0' : c);
  ptr.erase(std::remove(ptr.begin(), ptr.end(), '\0'), ptr.end());
  auto cut = ptr.find(" (length)");
  if (cut != std::string::npos) ptr.resize(cut);
  try {
    const auto& v = j.at(nlohmann::json::json_pointer("/" + ptr));
    return cut != std::string::npos && v.is_array() ? fmt::format("{} entries", v.size()) : v.dump();
  } catch (const nlohmann::json::exception&) {
    return "absent";
  }
}

void refuse_resume(const LoadedCheckpoint& ck, const char* what, const std::string& key, const std::string& user_key,
                   const nlohmann::json& saved, const nlohmann::json& now) {
  fail("{}/meta.json: cannot resume: {}.{}{} is {} in the checkpoint but {} in this run (resume with the "
       "checkpoint's {}, or start a new run)",
       ck.dir.string(), what, key, user_key.empty() ? "" : " (" + user_key + ")", value_at(saved, key),
       value_at(now, key), what);
}

void check_same(const LoadedCheckpoint& ck, const char* what, const nlohmann::json& saved, const nlohmann::json& now) {
  auto key = first_difference(saved, now);
  if (!key.empty()) refuse_resume(ck, what, key, "", saved, now);
}

// A visit() visitor that only collects the keys.
struct KeyNames {
  std::vector<std::string> keys;
  template <class T>
  void operator()(const char* key, T&) { keys.emplace_back(key); }
  // eos_token_id: one key, one id or a list (config/reader.h).
  template <class T>
  void one_or_list(const char* key, T&, std::vector<T>&) { keys.emplace_back(key); }
};

// LlamaConfig's keys in its visit() order, which is also the order a user reads and sets them.
std::vector<std::string> model_shape_keys() {
  KeyNames names;
  LlamaConfig c;
  visit(names, c);
  return names.keys;
}

// Compared in visit() order, not alphabetically: head_dim (written out in meta.json but derived
// from hidden_size / num_attention_heads) sorts before hidden_size, and a run that changed
// hidden_size must be told about hidden_size, under the key it set.
void check_same_model(const LoadedCheckpoint& ck, const nlohmann::json& saved, const nlohmann::json& now) {
  for (const auto& key : model_shape_keys()) {
    const nlohmann::json a = saved.contains(key) ? saved[key] : nlohmann::json();
    const nlohmann::json b = now.contains(key) ? now[key] : nlohmann::json();
    if (a != b) refuse_resume(ck, "model_config", key, "model.shape." + key, saved, now);
  }
  check_same(ck, "model_config", saved, now);
}

// What the checkpoint trained: its groups and their parameters' names and shapes (not how they
// were sharded).
nlohmann::json trained_parameters(const nlohmann::json& layout) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& g : layout.at("groups")) {
    nlohmann::json params = nlohmann::json::array();
    for (const auto& p : g.at("params")) params.push_back({{"name", p.at("name")}, {"shape", p.at("shape")}});
    out.push_back({{"name", g.at("name")}, {"params", params}});
  }
  return {{"groups", out}};
}

// An adapter checkpoint continues only on the base it was trained on, with the same adapters.
void check_same_base(const LoadedCheckpoint& ck, const parallel::ShardedModel& model) {
  const std::string saved = ck.meta.contains("base") ? ck.meta["base"].value("fingerprint", "") : "";
  const std::string& now = model.base_fingerprint();
  if (saved.empty() && !now.empty())
    fail("{}/meta.json: cannot resume: the checkpoint trained the whole model, this run trains adapters on a "
         "frozen base (model.adapter); resume without model.adapter, or export the checkpoint and start a new "
         "run from it (model.init_from)",
         ck.dir.string());
  if (!saved.empty() && now.empty())
    fail("{}/meta.json: cannot resume: the checkpoint holds adapters on a frozen base (model.adapter), this run "
         "trains the whole model; resume with the checkpoint's model.adapter",
         ck.dir.string());
  if (saved != now)
    fail("{}/meta.json: cannot resume: the frozen base differs from the one the adapters were trained on (base "
         "fingerprint {} in the checkpoint, {} in this run); resume with the checkpoint's model.init_from or "
         "model.init_seed",
         ck.dir.string(), saved, now);
  if (!ck.meta.contains("layout")) return;  // CheckpointGroups names what is missing
  const auto a = trained_parameters(ck.meta["layout"]), b = trained_parameters(model.layout());
  if (auto key = first_difference(a, b); !key.empty()) refuse_resume(ck, "trained parameters", key, "model.adapter", a, b);
}

}  // namespace

TrainProgress load_train_state(const std::filesystem::path& dir, parallel::ShardedModel& model, AdamW& opt,
                               Mixture& data) {
  auto ck = open_checkpoint(dir);
  check_same_model(ck, checkpoint_model_config_json(ck), llama_config_to_json(model.model()->config()));
  if (ck.meta.contains("data_plan"))
    check_same(ck, "data_plan", ck.meta["data_plan"], data_plan_json(data));
  else
    log::warn("{}/meta.json: no data_plan (saved by an older agenttune): the data cannot be checked", dir.string());
  try {
    check_same_base(ck, model);
  } catch (const nlohmann::json::exception& e) {
    fail("{}/meta.json: malformed layout: {}", dir.string(), e.what());
  }
  CheckpointGroups groups(ck);
  model.load_full_groups([&](const std::string& g, int64_t n) { return groups.full("flat.", g, n); });
  // The optimizer moments are resharded exactly like the parameters they belong to.
  NamedTensors optim;
  for (const std::string kind : {"exp_avg.", "exp_avg_sq."})
    for (auto& [group, slice] :
         model.own_slices([&](const std::string& g, int64_t n) { return groups.full("optim." + kind, g, n); }))
      optim.emplace_back(kind + group, slice);
  for (const auto& [group, shard] : model.shard_params())
    optim.emplace_back("step." + group, groups.full("optim.step.", group, 1).clone());
  opt.load_state(optim);
  try {
    data.restore(MixtureState::from_json(ck.meta.at("data"), data.options().sources.size()));
    if (ck.meta.contains("rng")) {
      try {
        set_rng_state_hex(ck.meta["rng"].at("cpu").get<std::string>());
      } catch (const c10::Error&) {
        fail("{}/meta.json: rng.cpu is not a CPU generator state", dir.string());
      }
    }
    TrainProgress p;
    p.step = ck.meta.at("step").get<int64_t>();
    p.tokens = ck.meta.at("tokens").get<int64_t>();
    p.nonfinite_in_a_row = ck.meta.value("nonfinite_in_a_row", int64_t{0});
    p.loss_window = ck.meta.value("loss_window", std::vector<double>{});
    return p;
  } catch (const nlohmann::json::exception& e) {
    fail("{}/meta.json: {}", dir.string(), e.what());
  }
}

nlohmann::json checkpoint_model_config_json(const LoadedCheckpoint& ck) {
  if (!ck.meta.contains("model_config")) fail("{}/meta.json: no model_config", ck.dir.string());
  return ck.meta["model_config"];
}

LlamaConfig checkpoint_model_config(const LoadedCheckpoint& ck) {
  return llama_config_from_json(checkpoint_model_config_json(ck), (ck.dir / "meta.json").string());
}

void for_each_checkpoint_tensor(const LoadedCheckpoint& ck, c10::ScalarType dtype,
                                const std::function<void(const std::string&, const at::Tensor&)>& sink) {
  CheckpointGroups groups(ck);
  try {
    for (const auto& g : groups.layout().at("groups")) {
      auto name = g.at("name").get<std::string>();
      auto full = groups.full("flat.", name, g.at("numel").get<int64_t>());
      for (const auto& p : g.at("params")) {
        auto shape = p.at("shape").get<std::vector<int64_t>>();
        int64_t numel = 1;
        for (auto d : shape) numel *= d;
        sink(p.at("name").get<std::string>(),
             full.narrow(0, p.at("offset").get<int64_t>(), numel).view(shape).to(dtype).contiguous());
      }
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}/meta.json: malformed layout: {}", ck.dir.string(), e.what());
  }
}

}  // namespace agenttune
