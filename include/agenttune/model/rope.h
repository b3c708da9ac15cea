#pragma once
// Rotary position embeddings in Hugging Face's half-split layout (rotate_half), computed from
// explicit positions so packed sequences can restart positions per document.
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>

#include "agenttune/model/llama_config.h"

namespace agenttune {

struct RopeTables {
  at::Tensor cos;  // [B, T, head_dim], in the activations' dtype
  at::Tensor sin;
};

class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  explicit RotaryEmbedding(const LlamaConfig& c);
  // Angles in fp32 (as HF does) then cast to `dtype`. Host positions that are one run p, p+1, ...
  // in every row (a plain forward, a decoding step) read rows of a table cached per dtype and
  // device, no copy; other host positions (packed documents, a left-padded batch's per-row
  // positions) gather rows of that table; device positions are computed.
  RopeTables tables(const at::Tensor& positions, c10::ScalarType dtype) const;

 private:
  RopeTables compute(const at::Tensor& positions, c10::ScalarType dtype) const;
  RopeTables cached_rows(int64_t batch, int64_t start, int64_t length, c10::ScalarType dtype,
                         const c10::Device& device) const;
  RopeTables indexed_rows(const at::Tensor& positions, int64_t last, c10::ScalarType dtype) const;

  int64_t head_dim_ = 0;
  int64_t max_positions_ = 0;
  LlamaConfig config_;  // what the inverse frequencies depend on (model/rope_frequencies.h)
  // Positions [0, length) per (dtype, device); shared by copies of this object (a model's copies
  // all see one cache).
  struct Cache {
    std::mutex mu;
    std::map<std::tuple<c10::ScalarType, c10::DeviceType, c10::DeviceIndex>, RopeTables> tables;
  };
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

// x: [B, H, T, hd]; cos/sin: [B, T, hd]. Each half of the output is written in place of a
// concatenation (rotate_half never materialises), with the same products and sums as
// x * cos + rotate_half(x) * sin, so the same bits; its backward is the transposed rotation.
at::Tensor apply_rope(const at::Tensor& x, const RopeTables& t);

// The same rotation without autograd, written over x itself (the fused q/k projection rotates its
// own output buffer), and its transpose applied to `grad`, written into `out` (that projection's
// backward): the bits of apply_rope and of its backward.
void rope_in_place(const at::Tensor& x, const RopeTables& t);
void rope_transposed_to(const at::Tensor& out, const at::Tensor& grad, const RopeTables& t);

}  // namespace agenttune
