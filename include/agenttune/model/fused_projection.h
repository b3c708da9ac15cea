#pragma once
// Sibling projections of one input (q/k/v, gate/up) as one matmul. The sharding engine lays a unit's
// weights out in one flat buffer in module order, so q, k and v (and gate and up) are consecutive rows
// of it: one [sum of outs, in] view multiplies them all without a copy, and backward forms one grad
// for the input and one for the weights (returned as row views of it) instead of one per projection
// plus the sums autograd adds. Weights held apart (a plain model) take the unfused path.
#include <ATen/core/Tensor.h>

#include <vector>

#include "agenttune/model/llama.h"
#include "agenttune/model/rope.h"

namespace agenttune {

struct FusedSlot {
  at::Tensor weight;  // [out, in]
  // Added to this projection's output before anything else (a LoRA adapter's scale * B A x, see
  // ProjectionImpl::adapter_delta): as y + delta, cast back to y's dtype. Undefined: none.
  at::Tensor delta;
  // > 0: the output is attention's [B, heads, T, out / heads] view instead of [B, T, out].
  int64_t heads = 0;
  bool rope = false;  // rotate the heads by the tables (in place in the fused output)
};

// Whether the model takes the fused path on `device` (where fusable): off the CPU, for fewer and
// larger GEMMs and kernels (the fake device runs it, so the CPU suite proves it). On the CPU, MKL's
// separate products measured as fast or faster (bench_fused_projection), so the CPU keeps them.
bool fuses_projections_on(const c10::Device& device);

// Whether the slots' weights are consecutive rows of one buffer: same storage, dtype and device,
// each contiguous with the same row length, each starting where the previous one ends.
bool fusable(const std::vector<FusedSlot>& slots);

// Every slot's output for x [B, T, in], each a view of one [B, T, sum of outs] matmul output (so
// autograd keeps exactly the bytes the separate projections' outputs would). Needs fusable(slots).
// The values are those of the separate path up to the matmul's blocking;
// rope and the deltas are applied with the same ops as apply_rope and ProjectionImpl::forward.
std::vector<at::Tensor> fused_projections(const at::Tensor& x, const std::vector<FusedSlot>& slots,
                                          const RopeTables& rope);

// Moves every decoder layer's matrices into one flat buffer per layer, in module order (values kept),
// as the sharding engine lays a unit out: a plain model then takes the fused path where
// fuses_projections_on(its device) (its tests and bench_fused_projection compare the two).
void flatten_layer_weights(LlamaForCausalLM& model);

}  // namespace agenttune
