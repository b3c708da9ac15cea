#pragma once
// y = x W^T for a frozen weight stored as an NF4 record (QLoRA's base projections), as
// bitsandbytes' Linear4bit / MatMul4Bit computes it: W is dequantised into the input's dtype just
// before the matmul and dropped right after; autograd keeps the record (about half a byte per
// weight), not W, and backward dequantises again for the input's gradient. The weight gets no
// gradient. So a layer holds its compute-dtype weights only while one of its matmuls runs, on any
// path (resident, sharded per unit, recomputed).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace agenttune::quant {

// `record`: uint8, the bytes pack_nf4 wrote for a weight of `shape` [out, in], on x's device
// (typically a view into a gathered flat buffer). x: [..., in], float32, bfloat16 or float16.
at::Tensor nf4_linear(const at::Tensor& x, const at::Tensor& record, const std::vector<int64_t>& shape);

}  // namespace agenttune::quant
