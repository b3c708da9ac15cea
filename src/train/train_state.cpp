#include "agenttune/train/train_state.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "agenttune/io/hf_checkpoint.h"
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

std::filesystem::path save_train_state(CheckpointStore& store, LlamaForCausalLM& model, const AdamW& opt,
                                       const Mixture& data, const TrainProgress& p,
                                       const nlohmann::json& config_dump) {
  CheckpointWrite w;
  w.step = p.step;
  for (auto& item : model->named_parameters()) w.tensors.emplace_back("model." + item.key(), item.value().detach().cpu());
  for (auto& [name, t] : opt.state()) w.tensors.emplace_back("optim." + name, t.cpu());
  w.meta = {{"step", p.step},
            {"tokens", p.tokens},
            {"nonfinite_in_a_row", p.nonfinite_in_a_row},
            {"world_size", 1},
            {"data", data.state().to_json()},
            {"rng", {{"cpu", rng_state_hex()}}},
            {"model_config", llama_config_to_json(model->config())},
            {"config", config_dump}};
  return store.save(w);
}

void load_checkpoint_weights(const LoadedCheckpoint& ck, LlamaForCausalLM& model) {
  auto src = open_rank_tensors(ck.dir, 0);
  // The stored names carry a "model." prefix; a view with HF names lets load_weights check shapes.
  struct Prefixed : TensorSource {
    const TensorSource& inner;
    explicit Prefixed(const TensorSource& s) : inner(s) {}
    std::vector<std::string> names() const override {
      std::vector<std::string> out;
      for (auto& n : inner.names())
        if (n.rfind("model.", 0) == 0) out.push_back(n.substr(6));
      return out;
    }
    bool contains(const std::string& n) const override { return inner.contains("model." + n); }
    at::Tensor get(const std::string& n) const override { return inner.get("model." + n); }
    std::string where(const std::string& n) const override { return inner.where("model." + n); }
  } view(*src);
  load_weights(model, view);
}

TrainProgress load_train_state(const std::filesystem::path& dir, LlamaForCausalLM& model, AdamW& opt,
                               Mixture& data) {
  auto ck = open_checkpoint(dir);
  if (ck.world_size != 1)
    fail("{}: saved by {} ranks; resharding to 1 rank is not supported yet", dir.string(), ck.world_size);
  load_checkpoint_weights(ck, model);
  auto src = open_rank_tensors(ck.dir, 0);
  NamedTensors optim;
  for (auto& n : src->names())
    if (n.rfind("optim.", 0) == 0) optim.emplace_back(n.substr(6), src->get(n).clone());
  opt.load_state(optim);
  try {
    data.restore(MixtureState::from_json(ck.meta.at("data"), data.options().sources.size()));
    if (ck.meta.contains("rng")) set_rng_state_hex(ck.meta["rng"].at("cpu").get<std::string>());
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

}  // namespace agenttune
