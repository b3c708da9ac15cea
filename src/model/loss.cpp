#include "agenttune/model/loss.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

namespace agenttune {

at::Tensor cross_entropy_sum(const at::Tensor& logits, const at::Tensor& targets) {
  // Upcast: bf16 log-softmax over 32k classes loses the small probabilities the loss lives on.
  auto flat = logits.reshape({-1, logits.size(-1)}).to(at::kFloat);
  return at::cross_entropy_loss(flat, targets.reshape({-1}), {}, at::Reduction::Sum, kIgnoreIndex);
}

namespace {

// One chunk's summed loss; with `grad_logits`, the chunk's fp32 logits are turned into the
// gradient of that sum (softmax - one-hot on trained rows, zero elsewhere) in place.
at::Tensor chunk_loss(const at::Tensor& logits, const at::Tensor& targets, bool grad_logits) {
  auto valid = targets != kIgnoreIndex;
  auto safe = at::where(valid, targets, at::zeros({}, targets.options())).unsqueeze(1);
  auto lse = at::logsumexp(logits, 1);
  auto picked = logits.gather(1, safe).squeeze(1);
  auto loss = at::where(valid, lse - picked, at::zeros({}, lse.options())).sum();
  if (grad_logits) {
    logits.sub_(lse.unsqueeze(1)).exp_();
    logits.scatter_add_(1, safe, at::full({safe.size(0), 1}, -1.0, logits.options()));
    logits.mul_(valid.unsqueeze(1));
  }
  return loss;
}

struct LinearCrossEntropy : torch::autograd::Function<LinearCrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t chunk) {
    const int64_t N = hidden.size(0);
    auto loss = at::zeros({}, hidden.options().dtype(at::kFloat));
    auto grad_hidden = at::empty_like(hidden);
    auto grad_weight = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
    const bool fp32 = hidden.scalar_type() == at::kFloat;
    for (int64_t s = 0; s < N; s += chunk) {
      const int64_t n = std::min(chunk, N - s);
      auto h = hidden.narrow(0, s, n);
      at::Tensor logits = at::matmul(h, weight.t()).to(at::kFloat);
      loss.add_(chunk_loss(logits, targets.narrow(0, s, n), /*grad_logits=*/true));
      auto g = logits.to(hidden.scalar_type());
      auto gh = grad_hidden.narrow(0, s, n);
      at::mm_out(gh, g, weight);
      if (fp32) grad_weight.addmm_(g.t(), h);
      else grad_weight.add_(at::mm(g.t(), h));
    }
    ctx->save_for_backward({grad_hidden, grad_weight});
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto& g = grad_out[0];
    const auto wdtype = static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    auto gh = (saved[0] * g.to(saved[0].scalar_type()));
    auto gw = (saved[1] * g).to(wdtype);
    return {gh, gw, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                    int64_t chunk_rows) {
  const int64_t chunk = chunk_rows > 0 ? chunk_rows : linear_cross_entropy_chunk_rows(weight.size(0), weight.device().is_cpu());
  auto flat_t = targets.reshape({-1});
  if (at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad()))
    return LinearCrossEntropy::apply(hidden, weight, flat_t, chunk);
  // Evaluation: the loss alone, chunk by chunk.
  auto loss = at::zeros({}, hidden.options().dtype(at::kFloat));
  for (int64_t s = 0; s < hidden.size(0); s += chunk) {
    const int64_t n = std::min(chunk, hidden.size(0) - s);
    auto logits = at::matmul(hidden.narrow(0, s, n), weight.t()).to(at::kFloat);
    loss.add_(chunk_loss(logits, flat_t.narrow(0, s, n), /*grad_logits=*/false));
  }
  return loss;
}

int64_t linear_cross_entropy_chunk_rows(int64_t vocab, bool on_cpu) {
  const int64_t elements = on_cpu ? (int64_t{1} << 22) : (int64_t{1} << 26);
  return std::max<int64_t>(1, elements / std::max<int64_t>(vocab, 1));
}

at::Tensor labels_to_targets(const at::Tensor& labels) {
  auto pad = at::full({labels.size(0), 1}, kIgnoreIndex, labels.options());
  return at::cat({labels.narrow(1, 1, labels.size(1) - 1), pad}, 1);
}

int64_t count_trained(const at::Tensor& targets) { return (targets != kIgnoreIndex).sum().item<int64_t>(); }

}  // namespace agenttune
