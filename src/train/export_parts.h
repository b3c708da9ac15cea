#pragma once
// The pieces export_checkpoint (train/export.h) assembles: an export is planned from the checkpoint
// (a full model's groups, or an adapter run's base + adapters), written into the not yet published
// folder, then verified there.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "agenttune/io/safetensors.h"
#include "agenttune/model/adapter.h"
#include "agenttune/model/llama.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/train/export.h"
#include "agenttune/train/train_config.h"
#include "export_verify.h"

namespace agenttune {

struct ExportJob {
  ExportKind kind = ExportKind::Model;
  std::function<ShardedWrite(const std::filesystem::path& dir)> write;
  // Checks what `write` put in `dir`; `shown` is the destination named in messages.
  std::function<ExportCheck(const std::filesystem::path& dir, const std::filesystem::path& shown)> verify;
};

// A model folder's weights: their names and byte sizes in writing order, and the stream of them.
struct ExportWeights {
  std::vector<TensorSize> sizes;
  WeightStream stream;
};

// Writes weights (sharded as o.max_shard_bytes says), config, generation config, and the tokenizer
// (o.tokenizer, else `run_tokenizer`) and chat template files into `dir`.
ShardedWrite write_model_folder(const ExportWeights& weights, const LlamaConfig& cfg, const ExportOptions& o,
                                const std::filesystem::path& run_tokenizer, const std::filesystem::path& dir);

// The tokenizer a checkpoint's run trained with ("" if none recorded).
std::filesystem::path checkpoint_tokenizer(const LoadedCheckpoint& ck);

// Whether a checkpoint holds only adapters (a LoRA/QLoRA run: meta.json has "base").
bool checkpoint_has_adapters(const LoadedCheckpoint& ck);

// An adapter run's export: the PEFT folder (o.adapter_only) or the merged model.
ExportJob plan_adapter_export(const LoadedCheckpoint& ck, const ExportOptions& o);

// The run config a checkpoint recorded (meta.json config.yaml, resolved: absolute paths).
TrainConfig checkpoint_train_config(const LoadedCheckpoint& ck);

// The frozen base an adapter checkpoint was trained on, whole, float32, on the CPU: rebuilt from
// the run's config (model.init_from, or model.init_seed), with the run's vocabulary growth, and
// checked against the checkpoint's base fingerprint; it carries the run's adapters at their
// initial values (load_adapter_values puts the checkpoint's in). For QLoRA the seven projections
// are quantised to NF4 records as the run did (the fingerprint covers those) and dequantised to
// float32: the base the run computed with.
LlamaForCausalLM checkpoint_base_model(const LoadedCheckpoint& ck, const TrainConfig& cfg);

}  // namespace agenttune
