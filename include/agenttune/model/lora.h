#pragma once
// LoRA adapters on a LlamaForCausalLM (config in model/adapter.h). An adapted projection holds
// `lora_A` [r, in] and `lora_B` [out, r] beside its weight, so our parameter names are
// `model.layers.N.self_attn.q_proj.lora_A` ... (PEFT's file names add `base_model.model.` and
// `.weight`; io/peft_adapter maps them). Adapters are float32 whatever the base dtype, as PEFT keeps
// them; the base is frozen (requires_grad false), which is what the sharding engine goes by.
#include <string>
#include <string_view>

#include "agenttune/model/adapter.h"
#include "agenttune/model/llama.h"

namespace agenttune {

// Attaches an adapter to every projection `config` targets in every decoder layer, freezes every
// other parameter and leaves the adapters trainable. On a model with storage, A gets its initial
// value (initial_adapter_value) and B zero, so the model still computes the base exactly; on a
// meta-device skeleton only the shapes and names are made. Call after grow_vocab (which rebuilds
// the model from its base parameters).
void add_adapters(LlamaForCausalLM& model, const AdapterConfig& config);

// The initial value of adapter parameter `name` (ours, e.g. model.layers.0.mlp.up_proj.lora_A) of
// shape `sizes`, float32 on the CPU: B zero; A as PEFT's kaiming_uniform_(a=sqrt(5)), i.e.
// U(-1/sqrt(in), 1/sqrt(in)), drawn by torch's CPU generator seeded with
// splitmix64(init_seed ^ splitmix64(hash_text(name))) (util/seeded.h). Keyed by the name, it is the
// same on any device, world size and target subset; torch.nn.init.kaiming_uniform_ with
// torch.Generator().manual_seed(that seed) gives the same bits (tests/oracle/peft_lora.py).
at::Tensor initial_adapter_value(const AdapterConfig& config, const std::string& name, at::IntArrayRef sizes);

// Whether `name` is an adapter parameter (ends in .lora_A or .lora_B).
bool is_adapter_parameter(std::string_view name);
bool has_adapters(const LlamaForCausalLM& model);

// Folds every adapter into its base weight, W += (B @ A) * scale, as PEFT's merge_and_unload, and
// replaces the adapted projections by plain ones over the same (merged) weight tensor.
void merge_adapters(LlamaForCausalLM& model);

// ---- QLoRA (nf4) ----
// Replaces every decoder projection (all seven, targeted or not: bitsandbytes quantises every
// linear layer but lm_head) by one over its NF4 record (quant/nf4.h), frozen; embeddings, norms
// and lm_head stay as they are. Adapters already attached move over unchanged, so call it after
// add_adapters. `quantise_values`: quantise the weights the model holds; false (a model whose
// weights are allocated but never written, continued from a checkpoint) only allocates the records
// (meta on a meta skeleton), which the engine then fills through parallel/nf4_weight_slices.h.
void quantize_projections(LlamaForCausalLM& model, bool quantise_values);
bool has_quantized_projections(const LlamaForCausalLM& model);
// The inverse for export and checks: every quantised projection becomes a plain one over its
// dequantised weight in `dtype` (the values QLoRA trained against), adapters kept.
void dequantize_projections(LlamaForCausalLM& model, c10::ScalarType dtype);

}  // namespace agenttune
