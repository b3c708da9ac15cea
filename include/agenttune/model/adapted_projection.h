#pragma once
// LoRA projections of one input (q/k/v, gate/up, or a single one) as one autograd node: each output
// is W_i x + b_i + s_i B_i (A_i x) over a frozen W_i. Autograd's chain for one adapted projection
// is five nodes (the base matmul, A, the scale, B, the in-place add) whose input gradients are
// summed pairwise into x's; here the A matrices of the group are one [sum of ranks, in] product,
// the delta is accumulated into the base output by the GEMM itself (addmm), and backward forms x's
// gradient in one buffer (dy_i W_i for every slot plus the group's (s g) A, all by addmm), A's
// gradient in one product and B's from the saved s A x:
//   g = dy B (the rank-wide gradient), dA = s g^T x, dB = dy^T (s A x), dx = sum dy W + s g A.
// The values are PEFT's up to rounding (its forward computes the same products in another order).
#include <ATen/core/Tensor.h>

#include <vector>

#include "agenttune/model/llama.h"

namespace agenttune {

// Whether `projections` can run as one node for x: each has an adapter, its weight (dense, or NF4:
// dequantised into x's dtype for each matmul, as quant::nf4_linear does) and bias are frozen, x,
// a dense weight and the adapter share a dtype (a bf16 base under float32 adapters casts x as PEFT
// does, on the module's own path) and no dropout applies.
bool adapted_together(const at::Tensor& x, const std::vector<ProjectionImpl*>& projections);

// Every projection's output for x [..., in] ([..., out_i] each). Needs adapted_together(x, projections).
// The same kernels with and without grad mode, so a recomputed layer's forward equals its first.
std::vector<at::Tensor> adapted_projections(const at::Tensor& x, const std::vector<ProjectionImpl*>& projections);

// adapted_projections where adapted_together holds, else each projection's own forward.
std::vector<at::Tensor> project_each(const at::Tensor& x, const std::vector<ProjectionImpl*>& projections);

}  // namespace agenttune
