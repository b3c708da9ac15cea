#include "agenttune/model/rope_frequencies.h"

#include <ATen/ATen.h>

#include <cmath>

namespace agenttune {

namespace {

// Python's `scalar / tensor` is tensor.reciprocal() * scalar: the same here, for the same bits.
at::Tensor scalar_over(double scalar, const at::Tensor& t) { return t.reciprocal() * scalar; }

// transformers' _compute_llama3_parameters, op for op.
at::Tensor llama3_rescaled(const at::Tensor& inv_freq, const LlamaConfig& c) {
  const double factor = c.rope_scaling_factor, low = c.rope_low_freq_factor, high = c.rope_high_freq_factor;
  const double old_context = static_cast<double>(c.rope_original_max_position_embeddings);
  const double low_freq_wavelen = old_context / low, high_freq_wavelen = old_context / high;
  auto wavelen = scalar_over(2 * M_PI, inv_freq);
  auto scaled = at::where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq);
  auto smooth = (scalar_over(old_context, wavelen) - low) / (high - low);
  auto smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
  auto medium = (wavelen < high_freq_wavelen).logical_not() & (wavelen > low_freq_wavelen).logical_not();
  return at::where(medium, smoothed, scaled);
}

}  // namespace

at::Tensor rope_inverse_frequencies(const LlamaConfig& c, const c10::Device& device) {
  const int64_t dim = c.resolved_head_dim();
  auto exponent = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong).device(device)).to(at::kFloat) / dim;
  auto inv_freq = scalar_over(1.0, at::pow(c.rope_theta, exponent));
  switch (c.rope_scaling_type) {
    case RopeScalingType::Linear: return c.rope_scaling_factor != 1.0 ? inv_freq / c.rope_scaling_factor : inv_freq;
    case RopeScalingType::Llama3: return llama3_rescaled(inv_freq, c);
  }
  return inv_freq;
}

}  // namespace agenttune
