#pragma once
// Recomputation in backward instead of keeping activations (model.activation_checkpointing, see
// model/recompute.h). LibTorch has no C++ torch.utils.checkpoint, so these are custom autograd
// Functions. Llama has no dropout, so no RNG state needs restoring. Every one re-runs the same ops
// on the same inputs in backward and back-propagates through them with autograd's own formulas,
// so gradients are bit-identical to keeping the activations.
#include <ATen/core/Tensor.h>

#include <functional>

#include "agenttune/model/llama.h"

namespace agenttune {

// full: same result and gradients as layer(x, rope, spec, nullptr), storing only x. The layer's
// parameters accumulate their .grad directly in backward (the reentrant scheme), so this serves
// callers that back-propagate into .grad, not torch::autograd::grad over the parameters.
at::Tensor checkpointed_layer(DecoderLayer& layer, const at::Tensor& x, const RopeTables& rope,
                              const AttentionSpec& spec);

// selective: fn(a, b), keeping only a and b; fn's intermediates and its output come back in
// backward. The inputs (a parameter among them) get their gradients as inputs of the Function, so
// torch::autograd::grad over them works (the sharding engine's per-unit backward).
using BinaryOp = std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>;
at::Tensor recomputed(const BinaryOp& fn, const at::Tensor& a, const at::Tensor& b);

// SwiGLU's product silu(gate) * up: the one formula of the plain and the recomputed MLP.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// selective: at::linear(swiglu(gate, up), weight), keeping gate, up and the weight but not the
// product (down_proj's input) or silu(gate). The matmul is not re-run: backward recomputes
// silu(gate) (and the product, for the weight's grad) and applies the gradients autograd's ops
// would, dropping each temporary as soon as it is used.
at::Tensor swiglu_linear_recomputed(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight);

}  // namespace agenttune
