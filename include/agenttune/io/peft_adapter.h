#pragma once
// PEFT LoRA adapter folders (what `peft.PeftModel.save_pretrained` writes, and what
// `PeftModel.from_pretrained` and vLLM's LoRA loader read):
//   adapter_config.json        PEFT's LoraConfig, every key as the pinned peft writes it (sorted,
//                              indent 2): peft_type "LORA", r, lora_alpha, target_modules, ...
//   adapter_model.safetensors  base_model.model.<HF module>.lora_A.weight [r, in] and
//                              .lora_B.weight [out, r] for each wrapped projection of each layer
// In memory an adapter uses our parameter names (`model.layers.0.self_attn.q_proj.lora_A`, see
// model/adapter.h); the PEFT names exist only in the files. Reading refuses, naming the field or
// tensor, every adapter our model cannot compute exactly as PEFT would: another peft_type, DoRA,
// biases, rank/alpha patterns, modules_to_save, other target modules, initialisations that
// rewrite the base weights (PiSSA, OLoRA, LoftQ, CorDA), layer subsets, ...
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <string>

#include "agenttune/model/adapter.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/named_tensors.h"

namespace agenttune {

// The peft release whose adapter_config.json keys and defaults we write (scripts/requirements.txt
// pins the same one as the test oracle).
inline constexpr const char* kPeftVersion = "0.21.2";

struct PeftAdapter {
  AdapterConfig config;             // kind Lora; rank, alpha, dropout, target_modules, rslora
  std::string base_model;           // base_model_name_or_path; "" when the file holds null
  NamedTensors tensors;             // our names, float32, [r, in] / [out, r]
};

// `model.layers.3.mlp.down_proj.lora_B` <-> `base_model.model.model.layers.3.mlp.down_proj.lora_B.weight`.
// The reverse throws naming `where` (the file) for a name no LoRA projection adapter of ours has
// (embedding adapters, biases, DoRA magnitudes, names still holding an adapter name, ...).
std::string peft_tensor_name(const std::string& ours);
std::string our_tensor_name(const std::string& peft, const std::string& where);

// Writes `dir` (created if absent): adapter_config.json and adapter_model.safetensors with
// `tensors` (our names) cast to `dtype` (PEFT itself saves float32). `config` must be a LoRA or
// QLoRA adapter: a QLoRA adapter is a plain LoRA adapter of the dequantised base.
void write_peft_adapter(const std::filesystem::path& dir, const AdapterConfig& config, const std::string& base_model,
                        const NamedTensors& tensors, c10::ScalarType dtype);

// Reads a folder PEFT (or write_peft_adapter) wrote. Throws agenttune::Error naming the file and
// the field or tensor for anything unsupported, malformed or inconsistent (a tensor of another
// rank, a projection not in target_modules, A without B).
PeftAdapter read_peft_adapter(const std::filesystem::path& dir);

// Puts `adapter` on `model`: add_adapters with its config, then load_adapter_values.
void apply_peft_adapter(LlamaForCausalLM& model, const PeftAdapter& adapter, const std::string& where);

// Copies `tensors` (our names) into the model's adapter parameters. Every adapter parameter must
// get a tensor of its shape and every tensor must have a parameter: `where` (the folder) and the
// tensor are named otherwise. PEFT only warns about missing tensors, which silently leaves a
// projection untrained; we refuse.
void load_adapter_values(LlamaForCausalLM& model, const NamedTensors& tensors, const std::string& where);

}  // namespace agenttune
