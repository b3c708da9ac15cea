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

// One chunk's summed loss; with `grad_logits`, the chunk's fp32 logits are turned into the gradient of
// that sum (softmax - one-hot on trained rows, zero elsewhere) in place. The log-softmax runs in place,
// one row at a time while the row is in cache (max, sum of exps, subtract): logsumexp and the
// subtractions around it took five passes over the whole chunk and a chunk-sized temporary. Every
// target trained (`all_trained`), no row needs masking.
at::Tensor chunk_loss(at::Tensor logits, const at::Tensor& targets, bool grad_logits, bool all_trained) {
  at::_log_softmax_out(logits, logits, 1, /*half_to_float=*/false);
  at::Tensor valid, index = targets.unsqueeze(1);
  if (!all_trained) {
    valid = targets != kIgnoreIndex;
    index = at::where(valid, targets, at::zeros({}, targets.options())).unsqueeze(1);
  }
  auto picked = logits.gather(1, index).squeeze(1);
  auto loss = (all_trained ? picked : at::where(valid, picked, at::zeros({}, picked.options()))).sum().neg();
  if (grad_logits) {
    logits.exp_();
    logits.scatter_add_(1, index, at::full({index.size(0), 1}, -1.0, logits.options()));
    if (!all_trained) logits.mul_(valid.unsqueeze(1));
  }
  return loss;
}

// grad_weight (+)= g^T h with no compute-dtype partial: the first chunk writes it (no zero fill, no
// read of a zero buffer), later ones accumulate. fp32 accumulates in place; a CUDA bf16 GEMM writes
// fp32 (mm's out_dtype); the CPU has no such kernel, so there the chunk's fp32 softmax gradient meets
// its upcast hidden rows.
void add_weight_grad(at::Tensor& grad_weight, const at::Tensor& grad_logits, const at::Tensor& g, const at::Tensor& h) {
  const bool first = !grad_weight.defined();
  if (h.scalar_type() == at::kFloat) {
    if (first) grad_weight = at::mm(g.t(), h);
    else grad_weight.addmm_(g.t(), h);
  } else if (h.is_cuda()) {
    if (first) grad_weight = at::mm(g.t(), h, at::kFloat);
    else grad_weight.add_(at::mm(g.t(), h, at::kFloat));
  } else {
    if (first) grad_weight = at::mm(grad_logits.t(), h.to(at::kFloat));
    else grad_weight.addmm_(grad_logits.t(), h.to(at::kFloat));
  }
}

struct SinkHolder : torch::CustomClassHolder {
  explicit SinkHolder(GradSink f) : fn(std::move(f)) {}
  GradSink fn;
};

struct LinearCrossEntropy : torch::autograd::Function<LinearCrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t chunk, bool all_trained,
                            const c10::intrusive_ptr<SinkHolder>& sink) {
    const int64_t N = hidden.size(0);
    // A frozen head (LoRA) or a frozen input gets no gradient work at all.
    const bool want_hidden = hidden.requires_grad(), want_weight = weight.requires_grad();
    auto loss = at::zeros({}, hidden.options().dtype(at::kFloat));
    at::Tensor grad_hidden = want_hidden ? at::empty_like(hidden) : at::Tensor(), grad_weight;
    for (int64_t s = 0; s < N; s += chunk) {
      const int64_t n = std::min(chunk, N - s);
      auto h = hidden.narrow(0, s, n);
      at::Tensor logits = at::matmul(h, weight.t()).to(at::kFloat);
      loss.add_(chunk_loss(logits, targets.narrow(0, s, n), /*grad_logits=*/true, all_trained));
      auto g = logits.to(hidden.scalar_type());
      if (want_hidden) {
        auto gh = grad_hidden.narrow(0, s, n);
        at::mm_out(gh, g, weight);
      }
      if (want_weight) add_weight_grad(grad_weight, logits, g, h);
    }
    // Neither is an input or output of the function: kept as plain data, scaled in place by backward.
    ctx->saved_data["grad_hidden"] = grad_hidden;
    ctx->saved_data["grad_weight"] = grad_weight;
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    if (sink) ctx->saved_data["sink"] = at::IValue::make_capsule(sink);
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto gh = ctx->saved_data["grad_hidden"].toTensor();
    auto gw = ctx->saved_data["grad_weight"].toTensor();
    ctx->saved_data.erase("grad_hidden");
    ctx->saved_data.erase("grad_weight");
    // The step's scale (1 / its trained tokens) in fp32: cast to bf16 it would be off by up to 2^-9
    // in every gradient below the head.
    const at::Tensor& scale = grad_out[0];
    if (gh.defined()) {
      if (gh.scalar_type() == at::kFloat) gh.mul_(scale);
      else gh.copy_(gh.to(at::kFloat).mul_(scale));
    }
    const at::Tensor none;
    if (!gw.defined()) return {gh, none, none, none, none, none};
    gw.mul_(scale);
    if (ctx->saved_data.count("sink")) {
      c10::static_intrusive_pointer_cast<SinkHolder>(ctx->saved_data["sink"].toCapsule())->fn(gw);
      return {gh, none, none, none, none, none};
    }
    const auto wdtype = static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt());
    return {gh, gw.to(wdtype), none, none, none, none};
  }
};

}  // namespace

at::Tensor linear_cross_entropy_sum(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                    int64_t chunk_rows, const GradSink& weight_grad_sink, bool all_trained) {
  const int64_t chunk = chunk_rows > 0 ? chunk_rows : linear_cross_entropy_chunk_rows(weight.size(0), weight.device().is_cpu());
  auto flat_t = targets.reshape({-1});
  if (at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad()))
    return LinearCrossEntropy::apply(hidden, weight, flat_t, chunk, all_trained,
                                     weight_grad_sink ? c10::make_intrusive<SinkHolder>(weight_grad_sink)
                                                      : c10::intrusive_ptr<SinkHolder>());
  // Evaluation: the loss alone, chunk by chunk.
  auto loss = at::zeros({}, hidden.options().dtype(at::kFloat));
  for (int64_t s = 0; s < hidden.size(0); s += chunk) {
    const int64_t n = std::min(chunk, hidden.size(0) - s);
    auto logits = at::matmul(hidden.narrow(0, s, n), weight.t()).to(at::kFloat);
    loss.add_(chunk_loss(logits, flat_t.narrow(0, s, n), /*grad_logits=*/false, all_trained));
  }
  return loss;
}

int64_t linear_cross_entropy_chunk_rows(int64_t vocab, bool on_cpu) {
  // On a CPU each chunk's three head matmuls repack the whole [V, D] weight, so chunks of ~130
  // rows (16 MB at V = 32000) spent more time packing than multiplying; ~1000 rows amortise it.
  const int64_t elements = on_cpu ? (int64_t{1} << 25) : (int64_t{1} << 26);
  return std::max<int64_t>(1, elements / std::max<int64_t>(vocab, 1));
}

at::Tensor labels_to_targets(const at::Tensor& labels) {
  auto pad = at::full({labels.size(0), 1}, kIgnoreIndex, labels.options());
  return at::cat({labels.narrow(1, 1, labels.size(1) - 1), pad}, 1);
}

int64_t count_trained(const at::Tensor& targets) { return (targets != kIgnoreIndex).sum().item<int64_t>(); }

}  // namespace agenttune
