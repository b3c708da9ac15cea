#pragma once
// Causal-LM loss. Targets are aligned with the logits (targets[t] is the token after position t,
// -100 = not trained), so packed and masked batches need no shifting inside the model. The sum is
// returned, not the mean: a step's loss is the sum over every micro-batch (and rank) divided by
// the step's trained-token count, never a mean of means.
#include <ATen/core/Tensor.h>

namespace agenttune {

constexpr int64_t kIgnoreIndex = -100;

// Sum of token cross-entropies in fp32 over targets != -100.
at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets);

// HF-style labels (aligned with the inputs) -> targets: shift left by one, pad with -100.
at::Tensor labels_to_targets(const at::Tensor& labels);

int64_t count_trained(const at::Tensor& targets);

}  // namespace agenttune
