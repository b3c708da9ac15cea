#include "agenttune/model/rope.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "agenttune/model/rope_frequencies.h"

namespace agenttune {

RotaryEmbedding::RotaryEmbedding(const LlamaConfig& c)
    : head_dim_(c.resolved_head_dim()), max_positions_(c.max_position_embeddings), config_(c) {}

RopeTables RotaryEmbedding::compute(const at::Tensor& positions, c10::ScalarType dtype) const {
  // Same op order as transformers (fp32 throughout) so fp32 logits agree to rounding.
  auto inv_freq = rope_inverse_frequencies(config_, positions.device());
  auto freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, hd/2]
  auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

namespace {

// p where every row of host positions [B, T] is p, p+1, ..., p+T-1; nullopt otherwise. Reading
// them costs nothing next to a forward (they are the batch's own host tensor, no device sync).
std::optional<int64_t> run_start(const at::Tensor& positions) {
  if (!positions.device().is_cpu() || positions.scalar_type() != at::kLong || positions.dim() != 2 ||
      positions.numel() == 0)
    return std::nullopt;
  const auto p = positions.contiguous();
  const int64_t B = p.size(0), T = p.size(1);
  const int64_t* d = p.data_ptr<int64_t>();
  const int64_t start = d[0];
  if (start < 0) return std::nullopt;
  for (int64_t r = 0; r < B; ++r)
    for (int64_t t = 0; t < T; ++t)
      if (d[r * T + t] != start + t) return std::nullopt;
  return start;
}

// The largest of host positions [B, T] when none is negative; nullopt for device positions (reading
// them would sync) or a negative one.
std::optional<int64_t> host_last(const at::Tensor& positions) {
  if (!positions.device().is_cpu() || positions.scalar_type() != at::kLong || positions.dim() != 2 ||
      positions.numel() == 0)
    return std::nullopt;
  const auto p = positions.contiguous();
  const int64_t* d = p.data_ptr<int64_t>();
  const auto [lo, hi] = std::minmax_element(d, d + p.numel());
  if (*lo < 0) return std::nullopt;
  return *hi;
}

}  // namespace

RopeTables RotaryEmbedding::cached_rows(int64_t batch, int64_t start, int64_t length, c10::ScalarType dtype,
                                        const c10::Device& device) const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  auto& t = cache_->tables[{dtype, device.type(), device.index()}];
  const int64_t needed = start + length;
  if (!t.cos.defined() || t.cos.size(0) < needed) {
    // Built once for the model's positions (longer runs double it), so the rows a step reads do
    // not depend on which lengths came before.
    int64_t rows = std::max<int64_t>({max_positions_, t.cos.defined() ? 2 * t.cos.size(0) : 0, 1});
    while (rows < needed) rows *= 2;
    at::NoGradGuard no_grad;
    auto all = compute(at::arange(rows, at::TensorOptions().dtype(at::kLong).device(device)).unsqueeze(0), dtype);
    t = {all.cos[0], all.sin[0]};
  }
  auto rows = [&](const at::Tensor& table) {
    return table.narrow(0, start, length).unsqueeze(0).expand({batch, length, head_dim_});
  };
  return {rows(t.cos), rows(t.sin)};
}

RopeTables RotaryEmbedding::tables(const at::Tensor& positions, c10::ScalarType dtype) const {
  // Inference tensors could not be saved for a later training backward: those runs compute.
  if (!c10::InferenceMode::is_enabled()) {
    if (auto start = run_start(positions))
      return cached_rows(positions.size(0), *start, positions.size(1), dtype, positions.device());
    if (auto last = host_last(positions)) return indexed_rows(positions, *last, dtype);
  }
  return compute(positions, dtype);
}

RopeTables RotaryEmbedding::indexed_rows(const at::Tensor& positions, int64_t last, c10::ScalarType dtype) const {
  // The rows of the table a run reads, gathered: a left-padded batch's rows (each at its own
  // position) then get the bits each row gets decoded alone.
  const auto full = cached_rows(1, 0, last + 1, dtype, positions.device());
  auto idx = positions.reshape({-1});
  auto rows = [&](const at::Tensor& table) {
    return table[0].index_select(0, idx).view({positions.size(0), positions.size(1), head_dim_});
  };
  return {rows(full.cos), rows(full.sin)};
}

namespace {

// x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1], written half by half into `out`:
//   out1 = x1 * cos1 - x2 * sin1,  out2 = x2 * cos2 + x1 * sin2.
// (-a) * b is -(a * b) and c + -(d) is c - d exactly, so these are the bits of the concatenating
// form. `transposed` is the rotation's transpose, what backward applies to the incoming grad
// (autograd's sum of the two paths: grad * cos + rotate_half^T(grad * sin)):
//   out1 = g1 * cos1 + g2 * sin2,  out2 = g2 * cos2 - g1 * sin1.
// `out` may be x itself: then both cross products are taken before either half is written (else
// each is a temporary of its own moment, as before).
void rotate_to(const at::Tensor& out, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
               bool transposed) {
  const int64_t h = x.size(-1) / 2;
  auto half = [h](const at::Tensor& t, int i) { return t.narrow(-1, i * h, h); };
  auto cross1 = [&] { return half(x, 1) * half(sin, transposed ? 1 : 0); };
  auto cross2 = [&] { return half(x, 0) * half(sin, transposed ? 0 : 1); };
  at::Tensor early1, early2;
  if (out.is_same(x)) early1 = cross1(), early2 = cross2();
  auto o1 = half(out, 0), o2 = half(out, 1);
  at::mul_out(o1, half(x, 0), half(cos, 0));
  at::mul_out(o2, half(x, 1), half(cos, 1));
  const auto first = early1.defined() ? early1 : cross1();
  transposed ? o1.add_(first) : o1.sub_(first);
  const auto second = early2.defined() ? early2 : cross2();
  transposed ? o2.sub_(second) : o2.add_(second);
}

at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool transposed) {
  // The layout a pointwise op on x would give (x * cos does the same for the concatenating form).
  auto out = at::empty_like(x);
  rotate_to(out, x, cos, sin, transposed);
  return out;
}

struct RopeFunction : torch::autograd::Function<RopeFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotate(x, cos, sin, /*transposed=*/false);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    return {rotate(grad_out[0], saved[0], saved[1], /*transposed=*/true), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor apply_rope(const at::Tensor& x, const RopeTables& t) {
  auto cos = t.cos.unsqueeze(1);  // broadcast over heads
  auto sin = t.sin.unsqueeze(1);
  if (!at::GradMode::is_enabled() || !x.requires_grad()) return rotate(x, cos, sin, /*transposed=*/false);
  return RopeFunction::apply(x, cos, sin);
}

void rope_in_place(const at::Tensor& x, const RopeTables& t) {
  rotate_to(x, x, t.cos.unsqueeze(1), t.sin.unsqueeze(1), /*transposed=*/false);
}

void rope_transposed_to(const at::Tensor& out, const at::Tensor& grad, const RopeTables& t) {
  rotate_to(out, grad, t.cos.unsqueeze(1), t.sin.unsqueeze(1), /*transposed=*/true);
}

}  // namespace agenttune
