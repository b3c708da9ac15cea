#include "agenttune/model/loss.h"

#include <ATen/ATen.h>

namespace agenttune {

at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets) {
  // Upcast: bf16 log-softmax over 32k classes loses the small probabilities the loss lives on.
  auto flat = logits.reshape({-1, logits.size(-1)}).to(at::kFloat);
  return at::cross_entropy_loss(flat, targets.reshape({-1}), {}, at::Reduction::Sum, kIgnoreIndex);
}

at::Tensor labels_to_targets(const at::Tensor& labels) {
  auto pad = at::full({labels.size(0), 1}, kIgnoreIndex, labels.options());
  return at::cat({labels.narrow(1, 1, labels.size(1) - 1), pad}, 1);
}

int64_t count_trained(const at::Tensor& targets) { return (targets != kIgnoreIndex).sum().item<int64_t>(); }

}  // namespace agenttune
