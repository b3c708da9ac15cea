#pragma once
// Activation checkpointing per decoder layer: forward without saving activations, recompute the
// layer in backward. LibTorch has no C++ torch.utils.checkpoint, so this is a custom autograd
// Function. Llama has no dropout, so no RNG state needs restoring.
#include <ATen/core/Tensor.h>

#include "agenttune/model/llama.h"

namespace agenttune {

// Same result and gradients as layer(x, rope, spec, nullptr), storing only x.
at::Tensor checkpointed_layer(DecoderLayer& layer, const at::Tensor& x, const RopeTables& rope,
                              const AttentionSpec& spec);

}  // namespace agenttune
