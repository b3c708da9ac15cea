#pragma once
// Causal-LM loss. Targets are aligned with the logits (targets[t] is the token after position t,
// -100 = not trained), so packed and masked batches need no shifting inside the model. The sum is
// returned, not the mean: a step's loss is the sum over every micro-batch (and rank) divided by
// the step's trained-token count, never a mean of means.
#include <ATen/core/Tensor.h>

#include <functional>

namespace agenttune {

constexpr int64_t kIgnoreIndex = -100;

// Sum of token cross-entropies in fp32 over targets != -100.
at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets);

// Takes a gradient in fp32 where autograd would cast it to its parameter's (compute) dtype.
using GradSink = std::function<void(at::Tensor)>;

// The same sum for hidden states [N, D] through a head `weight` [V, D] (logits = hidden @ weight^T,
// in their dtype, upcast to fp32 for the loss as above) without ever holding all N x V logits: rows
// are taken in chunks of `chunk_rows` (0: about 128 MB of fp32 logits on a CPU, 256 MB elsewhere),
// and in a grad-mode forward each chunk's gradient is computed while its logits are at hand
// (softmax minus one-hot, then one matmul each for hidden and weight), so backward only scales the
// kept gradients: no second pass over the head. The weight gradient accumulates in fp32 (each
// chunk's product too: no compute-dtype partial), the incoming scale (1 / the step's tokens) is
// applied in fp32, and with `weight_grad_sink` the weight's fp32 gradient goes there instead of
// through autograd, which would round it to a bf16 weight's dtype (the sharding engine's fp32
// accumulator takes it; the weight then gets no autograd gradient). A weight (or hidden) that does not
// require grad gets no gradient work. `all_trained`: the caller knows that no target is kIgnoreIndex
// (the model's head after selecting the trained rows), so no row is masked; claiming it falsely is an
// out-of-range gather.
at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                    int64_t chunk_rows = 0, const GradSink& weight_grad_sink = {},
                                    bool all_trained = false);

// The default chunk of linear_cross_entropy_sum: rows per ~128 MB (CPU) or ~256 MB (elsewhere) of
// fp32 logits. The memory plan counts the same chunk.
int64_t linear_cross_entropy_chunk_rows(int64_t vocab, bool on_cpu);

// HF-style labels (aligned with the inputs) -> targets: shift left by one, pad with -100.
at::Tensor labels_to_targets(const at::Tensor& labels);

int64_t count_trained(const at::Tensor& targets);

}  // namespace agenttune
