#pragma once
// The checks behind export_checkpoint (train/export.h), on the not yet published folder. `shown` is
// the destination name used in messages: the temporary folder is gone by the time a user reads them.
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>

#include "agenttune/model/llama_config.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/train/export.h"

namespace agenttune {

// The probe batch and the logits our loader's reading of the export gives on it (float32 compute).
struct ProbeLogits {
  at::Tensor tokens;  // [2, T] int64
  at::Tensor logits;  // [2, T, V] float32
};

// Reloads `dir` with load_pretrained and checks it against checkpoint `ck`: the config, every
// tensor (exactly the checkpoint's float32 weight rounded to cfg.dtype) and the probe logits
// against the checkpoint's float32 weights (within export_logits_tolerance). Throws on a mismatch.
ExportCheck verify_export(const LoadedCheckpoint& ck, const LlamaConfig& cfg, const std::filesystem::path& dir,
                          const std::filesystem::path& shown, ProbeLogits& probe);

// Loads `dir` in transformers with `python` (empty: the .venv of the checkout this binary was
// built in, else ./.venv): its logits must match `probe` and its tokenizer our ids on a probe text.
// No usable Python is an error, never a silent skip.
void verify_in_transformers(const std::filesystem::path& dir, const std::filesystem::path& shown,
                            const std::filesystem::path& python, const ProbeLogits& probe, ExportCheck& check);

// Flips the sign bit of every element of tensor `name` in the folder's safetensors files, in
// place. False if no file holds it. The tests' stand-in for a writer bug or a bad disk.
bool flip_tensor_signs(const std::filesystem::path& dir, const std::string& name);

}  // namespace agenttune
