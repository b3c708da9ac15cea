#pragma once
// The identity of a frozen base (LoRA's): a checksum of the frozen parameters' values, the same
// whether computed by the sharded engine from every rank's slices or from a whole model (export),
// at any world size and strategy. An adapter checkpoint records it; resume and export refuse a
// different base. It reads an evenly spread sample of each unit's frozen parameters, in fp32.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "agenttune/model/llama.h"

namespace agenttune::parallel {

// The model's units as the engine cuts it: "embed", "layers.<i>", "head", each with its
// parameters (full names) in order.
struct ModelUnit {
  std::string name;
  std::vector<std::pair<std::string, at::Tensor>> params;
};
std::vector<ModelUnit> model_units(LlamaForCausalLMImpl& model);

// The engine's frozen groups of a unit: "<unit>.frozen" (floating point, kept in the compute dtype)
// and "<unit>.frozen_bytes" (uint8: QLoRA's NF4 records, kept as bytes).
inline constexpr const char* kFrozenGroup = ".frozen";
inline constexpr const char* kFrozenBytesGroup = ".frozen_bytes";

// One frozen group's share of the fingerprint: `slice` holds its flat values (fp32 as read, or
// bytes; a rank's slice of the padded group, or the whole group) from element `offset`; `numel` is the group's size,
// `group` its name ("layers.3.frozen"). Partial sums add modulo 2^64 to the group's.
uint64_t fingerprint_slice(const at::Tensor& slice, int64_t offset, int64_t numel, const std::string& group);

std::string fingerprint_hex(uint64_t sum);

// The fingerprint of a whole model's frozen (requires_grad false) parameters; "" when none is.
std::string base_fingerprint(LlamaForCausalLMImpl& model);

}  // namespace agenttune::parallel
