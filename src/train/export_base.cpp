// The frozen base of an adapter checkpoint, rebuilt whole for export: the checkpoint holds only the
// adapters, and its run config says where the base came from. The rebuilt base must have the
// fingerprint the run recorded, so an init_from folder changed since training is an error, never a
// silently different model.
#include <ATen/ATen.h>

#include "agenttune/config/load.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/model/lora.h"
#include "agenttune/parallel/base_fingerprint.h"
#include "agenttune/train/initial_model.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "export_parts.h"

namespace agenttune {

TrainConfig checkpoint_train_config(const LoadedCheckpoint& ck) {
  const std::string where = (ck.dir / "meta.json").string() + " (config.yaml)";
  if (!ck.meta.contains("config") || !ck.meta["config"].contains("yaml")) fail("{}: missing", where);
  // The resolved config as the run saved it: its paths are absolute.
  return load_config_text<TrainConfig>(ck.meta["config"]["yaml"].get<std::string>(), ConfigSource{where, ck.dir, {}});
}

LlamaForCausalLM checkpoint_base_model(const LoadedCheckpoint& ck, const TrainConfig& cfg) {
  const auto& adapter = cfg.model.adapter;
  InitialModel m = initial_model(cfg);
  if (m.source) {
    // Export holds the model whole: read every tensor, not the engine's per-rank slices.
    load_weights(m.model, *m.source);
    m.weights = nullptr;
    m.source.reset();
  }
  grow_initial_vocab(m, checkpoint_model_config(ck).vocab_size);
  add_adapters(m.model, adapter);
  // QLoRA's base is the NF4 records, as the engine holds and fingerprints them.
  if (adapter.kind == AdapterKind::Qlora) quantize_projections(m.model, /*quantise_values=*/true);

  const auto want = ck.meta.at("base").value("fingerprint", "");
  const auto got = parallel::base_fingerprint(*m.model);
  const auto from = cfg.model.init_from.empty() ? fmt::format("model.init_seed {}", cfg.model.init_seed)
                                                 : "model.init_from " + cfg.model.init_from.string();
  if (got != want)
    fail("{}: the base rebuilt from {} is not the one these adapters were trained on (fingerprint {}, the "
         "checkpoint's {}): has the folder changed since the run?",
         ck.dir.string(), from, got, want);
  log::info("export: base rebuilt from {}: fingerprint {}, as the checkpoint records", from, got);
  // The values QLoRA computed with, in float32 (what merging and the probe logits need).
  if (adapter.kind == AdapterKind::Qlora) dequantize_projections(m.model, at::kFloat);
  return m.model;
}

}  // namespace agenttune
