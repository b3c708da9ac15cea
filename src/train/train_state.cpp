#include "agenttune/train/train_state.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "agenttune/io/hf_config.h"
#include "agenttune/util/error.h"

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

std::filesystem::path save_train_state(CheckpointStore& store, dist::ShardedModel& model, const AdamW& opt,
                                       const Mixture& data, const TrainProgress& p, const nlohmann::json& config,
                                       dist::Dist& dist) {
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
                           {"data", data.state().to_json()},
                           {"rng", {{"cpu", rng_state_hex()}}},
                           {"model_config", llama_config_to_json(model.model()->config())},
                           {"layout", model.layout()},
                           {"config", config}};
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

TrainProgress load_train_state(const std::filesystem::path& dir, dist::ShardedModel& model, AdamW& opt,
                               Mixture& data) {
  auto ck = open_checkpoint(dir);
  CheckpointGroups groups(ck);
  model.load_full_groups([&](const std::string& g, int64_t n) { return groups.full("flat.", g, n); });
  // The optimizer moments are sliced exactly like the parameters they belong to.
  NamedTensors optim;
  for (size_t i = 0; i < model.num_groups(); ++i) {
    const auto& g = model.group(i);
    const int64_t len = g.padded / model.shard_world();
    for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
      auto full = groups.full(std::string("optim.") + kind, g.name, g.numel).to(at::kFloat);
      if (g.padded > g.numel) full = at::cat({full, at::zeros({g.padded - g.numel}, full.options())});
      optim.emplace_back(kind + g.name, full.narrow(0, model.shard_rank() * len, len).clone());
    }
    optim.emplace_back("step." + g.name, groups.full("optim.step.", g.name, 1).clone());
  }
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
    return p;
  } catch (const nlohmann::json::exception& e) {
    fail("{}/meta.json: {}", dir.string(), e.what());
  }
}

LlamaConfig checkpoint_model_config(const LoadedCheckpoint& ck) {
  if (!ck.meta.contains("model_config")) fail("{}/meta.json: no model_config", ck.dir.string());
  return llama_config_from_json(ck.meta["model_config"], (ck.dir / "meta.json").string());
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
