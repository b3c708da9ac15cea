#include "agenttune/model/rope.h"

#include <ATen/ATen.h>

namespace agenttune {

RotaryEmbedding::RotaryEmbedding(const LlamaConfig& c)
    : head_dim_(c.resolved_head_dim()), theta_(c.rope_theta), scaling_(c.rope_scaling_factor) {}

RopeTables RotaryEmbedding::tables(const at::Tensor& positions, c10::ScalarType dtype) const {
  // Same op order as transformers (fp32 throughout, theta ** (2i/d), linear scaling divides the
  // frequencies) so fp32 logits agree to rounding.
  auto opts = at::TensorOptions().dtype(at::kFloat).device(positions.device());
  auto exponent = at::arange(0, head_dim_, 2, opts.dtype(at::kLong)).to(at::kFloat) / head_dim_;
  auto inv_freq = 1.0 / at::pow(theta_, exponent);
  if (scaling_ != 1.0) inv_freq = inv_freq / scaling_;
  auto freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, hd/2]
  auto emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

static at::Tensor rotate_half(const at::Tensor& x) {
  int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTables& t) {
  auto cos = t.cos.unsqueeze(1);  // broadcast over heads
  auto sin = t.sin.unsqueeze(1);
  return x * cos + rotate_half(x) * sin;
}

}  // namespace agenttune
