#include "agenttune/quant/nf4_linear.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/custom_function.h>

#include "agenttune/quant/nf4.h"
#include "agenttune/util/error.h"

namespace agenttune::quant {

namespace {

at::Tensor dequantized(const at::Tensor& record, const std::vector<int64_t>& shape, c10::ScalarType dtype) {
  return dequantize_nf4(nf4_record_view(record, shape), dtype, nf4_tables(record.device()));
}

struct Nf4Linear : torch::autograd::Function<Nf4Linear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& record,
                            std::vector<int64_t> shape) {
    ctx->save_for_backward({record});
    ctx->saved_data["shape"] = c10::IValue(shape);
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    return at::linear(x, dequantized(record, shape, x.scalar_type()));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto record = ctx->get_saved_variables()[0];
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const auto dtype = static_cast<c10::ScalarType>(ctx->saved_data["dtype"].toInt());
    at::Tensor grad_x;
    if (ctx->needs_input_grad(0)) grad_x = at::matmul(grads[0], dequantized(record, shape, dtype));
    return {grad_x, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor nf4_linear(const at::Tensor& x, const at::Tensor& record, const std::vector<int64_t>& shape) {
  if (shape.size() != 2 || x.dim() < 1 || x.size(-1) != shape[1])
    fail("NF4 linear: input [{}] does not match a weight of shape [{}]", fmt::join(x.sizes(), ", "),
         fmt::join(shape, ", "));
  if (record.device() != x.device())
    fail("NF4 linear: the weight's record is on {} but the input on {}", record.device().str(), x.device().str());
  return Nf4Linear::apply(x, record, shape);
}

}  // namespace agenttune::quant
