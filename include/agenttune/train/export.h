#pragma once
// `agenttune export`: a training checkpoint (any world size) to a Hugging Face folder that
// transformers and vLLM load directly, proved before it is published. The folder is written as a
// hidden temporary sibling of the destination, reloaded with our own loader and checked against
// the checkpoint (every tensor exact after rounding to the export dtype, the config, and the logits
// of a fixed probe batch within a tolerance stated per dtype), optionally loaded in transformers
// too, and only then renamed into place. A failed check leaves nothing under the destination name
// (an existing export there is kept) and is an agenttune::Error. An adapter run's checkpoint (LoRA,
// QLoRA) holds only the adapters: its export rebuilds the base from the run's config and writes the
// model with the adapters merged in, or (adapter_only) a PEFT adapter folder checked with our reader
// and, under ExportVerify::Transformers, with peft over the base.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "agenttune/config/scalars.h"

namespace agenttune {

enum class ExportVerify {
  None,          // write only (a model whose float32 copy does not fit in memory)
  Ours,          // reload with load_pretrained and compare with the checkpoint
  Transformers,  // Ours, then transformers' LlamaForCausalLM and AutoTokenizer on the folder
};

// `export --verify`'s names, the default first.
template <>
struct EnumNames<ExportVerify> {
  static constexpr std::array<std::pair<ExportVerify, std::string_view>, 3> values = {
      {{ExportVerify::Ours, "ours"}, {ExportVerify::Transformers, "transformers"}, {ExportVerify::None, "none"}}};
};
ExportVerify parse_export_verify(const std::string& name);  // a name above, else throws listing them

struct ExportOptions {
  std::filesystem::path checkpoint;  // a step_N folder, or a checkpoints/ root (newest complete one)
  std::filesystem::path out;
  // Unset: bfloat16 for a model, float32 for an adapter folder (what PEFT saves).
  std::optional<c10::ScalarType> dtype;
  // A run with model.adapter: write only the adapter, as a PEFT folder (adapter_config.json +
  // adapter_model.safetensors, io/peft_adapter.h), instead of the model with the adapters merged.
  bool adapter_only = false;
  std::filesystem::path tokenizer;  // .model, tokenizer.json or folder to copy; empty = the run's
  std::string chat_template;        // written into tokenizer_config.json when set
  uint64_t max_shard_bytes = 5ull << 30;
  ExportVerify verify = ExportVerify::Ours;
  // For ExportVerify::Transformers; empty = the .venv of the checkout the binary was built in.
  std::filesystem::path python;
};

// What was written: a full fine-tuning run's model, an adapter run's model with the adapters merged
// into the base, or an adapter run's PEFT adapter folder.
enum class ExportKind { Model, MergedAdapters, AdapterFolder };

// What the check measured: logits of the export (as our loader reads it) against the checkpoint's
// float32 weights, both computed in float32 on the probe batch.
struct ExportCheck {
  double max_dlogit = 0;  // max |Δlogit|
  double tolerance = 0;
  double max_abs_logit = 0;
  // The Python oracle's logits against ours, same weights: transformers on a model folder,
  // transformers + peft (PeftModel.from_pretrained over the base) on an adapter folder.
  std::optional<double> transformers_max_dlogit;
  std::optional<double> transformers_tolerance;
  // A merged export: the merged float32 model's logits against the base + unmerged adapters'.
  std::optional<double> merge_max_dlogit;
  std::optional<double> merge_tolerance;
  std::optional<size_t> tokenizer_ids;  // how many probe-text ids transformers' tokenizer matched
};

struct ExportResult {
  std::filesystem::path checkpoint_dir;  // the step folder exported
  ExportKind kind = ExportKind::Model;
  c10::ScalarType dtype = c10::ScalarType::BFloat16;  // of the written tensors
  int64_t step = 0;
  size_t files = 0;
  uint64_t bytes = 0;
  std::optional<ExportCheck> check;
};

ExportResult export_checkpoint(const ExportOptions& opts);

// The unit roundoff of a weight dtype (2^-8 bfloat16, 2^-11 float16, 0 float32) and the logits
// tolerance it justifies for a model of `layers` decoder layers whose largest probe logit is
// `max_abs_logit` (the derivation is at the definition).
double unit_roundoff(c10::ScalarType dtype);
double export_logits_tolerance(c10::ScalarType dtype, int64_t layers, double max_abs_logit);

}  // namespace agenttune
