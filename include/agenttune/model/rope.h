#pragma once
// Rotary position embeddings in Hugging Face's half-split layout (rotate_half), computed from
// explicit positions so packed sequences can restart positions per document.
#include <ATen/core/Tensor.h>

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
  // Angles in fp32 (as HF does) then cast to `dtype`.
  RopeTables tables(const at::Tensor& positions, c10::ScalarType dtype) const;

 private:
  int64_t head_dim_ = 0;
  double theta_ = 10000.0;
  double scaling_ = 1.0;
};

// x: [B, H, T, hd]; cos/sin: [B, T, hd].
at::Tensor apply_rope(const at::Tensor& x, const RopeTables& t);

}  // namespace agenttune
