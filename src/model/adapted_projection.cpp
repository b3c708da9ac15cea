#include "agenttune/model/adapted_projection.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "agenttune/quant/nf4.h"
#include "agenttune/util/error.h"

namespace agenttune {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The group's tensors, each list in slot order; `bias[i]` undefined: none. `W[i]` is the dense
// weight, or with `nf4[i]` = {out, in} its NF4 record, dequantised into x's dtype just for each
// matmul as quant::nf4_linear does (so QLoRA and its dequantised model run the same kernels).
struct Group {
  std::vector<at::Tensor> A, B, W, bias;
  std::vector<std::vector<int64_t>> nf4;
  std::vector<double> scale;
  size_t size() const { return W.size(); }
};

at::Tensor weight(const at::Tensor& w, const std::vector<int64_t>& nf4, c10::ScalarType dtype) {
  if (nf4.empty()) return w;
  return quant::dequantize_nf4(quant::nf4_record_view(w, nf4), dtype, quant::nf4_tables(w.device()));
}

// The NF4 shapes as one flat list for saved_data: {out, in} per slot, {0, 0} for a dense weight.
std::vector<std::vector<int64_t>> unflattened(const std::vector<int64_t>& flat) {
  std::vector<std::vector<int64_t>> shapes;
  for (size_t i = 0; i + 1 < flat.size(); i += 2)
    shapes.push_back(flat[i] > 0 ? std::vector<int64_t>{flat[i], flat[i + 1]} : std::vector<int64_t>{});
  return shapes;
}

at::Tensor rows_of(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }

std::vector<int64_t> with_last(at::IntArrayRef sizes, int64_t last) {
  auto s = sizes.vec();
  s.back() = last;
  return s;
}

// Every A as one [sum of ranks, in] matrix (one product for the group instead of one per slot).
at::Tensor stacked_A(const Group& g) { return g.size() == 1 ? g.A[0] : at::cat(g.A, 0); }

// The outputs and the rank-wide product s A x [rows, sum of ranks] (B's gradient reads it).
std::pair<std::vector<at::Tensor>, at::Tensor> project(const at::Tensor& x, const Group& g) {
  const auto x2 = rows_of(x);
  auto ax = x2.mm(stacked_A(g).t());
  std::vector<at::Tensor> outs;
  for (size_t i = 0, col = 0; i < g.size(); col += g.A[i].size(0), ++i) {
    auto ax_i = ax.narrow(1, static_cast<int64_t>(col), g.A[i].size(0));
    ax_i.mul_(g.scale[i]);  // on the rank-wide product, not the [tokens, out] delta
    const auto w = weight(g.W[i], g.nf4[i], x.scalar_type());
    auto y = g.bias[i].defined() ? at::addmm(g.bias[i], x2, w.t()) : x2.mm(w.t());
    y.addmm_(ax_i, g.B[i].t());
    outs.push_back(y.view(with_last(x.sizes(), y.size(1))));
  }
  return {outs, ax};
}

// The autograd inputs as one list (none may be undefined): x, every A, every B, every W, then the
// biases there are (`has_bias`: whose each is).
Group group_of(at::TensorList inputs, size_t n, const std::vector<int64_t>& has_bias,
               const std::vector<int64_t>& nf4, const std::vector<double>& scale) {
  Group g;
  g.scale = scale;
  g.nf4 = unflattened(nf4);
  for (size_t i = 0, b = 0; i < n; ++i) {
    g.A.push_back(inputs[1 + i]), g.B.push_back(inputs[1 + n + i]), g.W.push_back(inputs[1 + 2 * n + i]);
    g.bias.push_back(has_bias[i] ? inputs[1 + 3 * n + b++] : at::Tensor());
  }
  return g;
}

struct AdaptedProjections : torch::autograd::Function<AdaptedProjections> {
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const std::vector<int64_t>& has_bias,
                               const std::vector<int64_t>& nf4, const std::vector<double>& scale) {
    const size_t n = has_bias.size();
    const Group g = group_of(inputs, n, has_bias, nf4, scale);
    auto [outs, ax] = project(inputs[0], g);
    std::vector<at::Tensor> saved{inputs[0], ax};
    for (size_t i = 0; i < n; ++i) saved.push_back(g.A[i]), saved.push_back(g.B[i]), saved.push_back(g.W[i]);
    ctx->save_for_backward(saved);
    ctx->set_materialize_grads(false);  // an output without a gradient: skipped, not zeros multiplied
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["nf4"] = nf4;
    ctx->saved_data["bias_count"] = static_cast<int64_t>(inputs.size() - 1 - 3 * n);
    return outs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &ax = saved[1];
    const auto scale = ctx->saved_data["scale"].toDoubleVector();
    const auto nf4 = unflattened(ctx->saved_data["nf4"].toIntVector());
    const size_t n = scale.size();
    const auto x2 = rows_of(x);
    variable_list result(1 + 3 * n + static_cast<size_t>(ctx->saved_data["bias_count"].toInt()) + 3);
    std::vector<at::Tensor> g;  // s_i dy_i B_i per slot, zeros where no grad came
    at::Tensor dx;
    for (size_t i = 0, col = 0; i < n; col += saved[2 + 3 * i].size(0), ++i) {
      const auto &A = saved[2 + 3 * i], &B = saved[3 + 3 * i];
      if (!grad_out[i].defined()) {
        g.push_back(at::zeros({x2.size(0), A.size(0)}, x2.options()));
        continue;
      }
      const auto dy = rows_of(grad_out[i]);
      g.push_back(dy.mm(B).mul_(scale[i]));
      if (ctx->needs_input_grad(1 + n + i))
        result[1 + n + i] = dy.t().mm(ax.narrow(1, static_cast<int64_t>(col), A.size(0)));
      if (!ctx->needs_input_grad(0)) continue;
      const auto W = weight(saved[4 + 3 * i], nf4[i], x.scalar_type());
      if (!dx.defined()) dx = dy.mm(W);
      else dx.addmm_(dy, W);
    }
    const auto gs = n == 1 ? g[0] : at::cat(g, 1);
    if (ctx->needs_input_grad(0)) {
      std::vector<at::Tensor> As;
      for (size_t i = 0; i < n; ++i) As.push_back(saved[2 + 3 * i]);
      const auto A = n == 1 ? As[0] : at::cat(As, 0);
      if (!dx.defined()) dx = gs.mm(A);
      else dx.addmm_(gs, A);
      result[0] = dx.view(x.sizes());
    }
    at::Tensor dA;
    for (size_t i = 0, row = 0; i < n; row += saved[2 + 3 * i].size(0), ++i) {
      // A slot whose output got no gradient leaves its A without one, as autograd's chain would.
      if (!ctx->needs_input_grad(1 + i) || !grad_out[i].defined()) continue;
      if (!dA.defined()) dA = gs.t().mm(x2);
      result[1 + i] = dA.narrow(0, static_cast<int64_t>(row), saved[2 + 3 * i].size(0));
    }
    return result;
  }
};

}  // namespace

bool adapted_together(const at::Tensor& x, const std::vector<ProjectionImpl*>& projections) {
  if (projections.empty()) return false;
  for (const auto* p : projections) {
    if (!p->has_adapter() || (p->lora_dropout > 0 && p->is_training())) return false;
    const auto& w = p->quantized() ? p->weight_nf4 : p->weight;
    if (w.requires_grad() || (p->bias.defined() && p->bias.requires_grad()) || w.device() != x.device()) return false;
    if (!p->quantized() && w.scalar_type() != x.scalar_type()) return false;
    for (const auto& t : {p->lora_A, p->lora_B})
      if (t.scalar_type() != x.scalar_type() || t.device() != x.device()) return false;
    if (p->bias.defined() && p->bias.scalar_type() != x.scalar_type()) return false;
  }
  return true;
}

std::vector<at::Tensor> adapted_projections(const at::Tensor& x, const std::vector<ProjectionImpl*>& projections) {
  if (!adapted_together(x, projections))
    fail("adapted_projections: the {} projections are not all adapted, frozen and of x's dtype",
         projections.size());
  std::vector<at::Tensor> inputs{x}, biases;
  std::vector<int64_t> has_bias, nf4;
  std::vector<double> scale;
  bool grads = x.requires_grad();
  for (const auto* p : projections) inputs.push_back(p->lora_A), grads = grads || p->lora_A.requires_grad();
  for (const auto* p : projections) inputs.push_back(p->lora_B), grads = grads || p->lora_B.requires_grad();
  for (const auto* p : projections) {
    inputs.push_back(p->quantized() ? p->weight_nf4 : p->weight);
    for (int64_t d : p->quantized() ? p->nf4_shape : std::vector<int64_t>{0, 0}) nf4.push_back(d);
    has_bias.push_back(p->bias.defined() ? 1 : 0);
    if (p->bias.defined()) biases.push_back(p->bias);
    scale.push_back(p->lora_scale);
  }
  inputs.insert(inputs.end(), biases.begin(), biases.end());
  if (!at::GradMode::is_enabled() || !grads)
    return project(x, group_of(inputs, projections.size(), has_bias, nf4, scale)).first;
  return AdaptedProjections::apply(at::TensorList(inputs), has_bias, nf4, scale);
}

std::vector<at::Tensor> project_each(const at::Tensor& x, const std::vector<ProjectionImpl*>& projections) {
  if (adapted_together(x, projections)) return adapted_projections(x, projections);
  std::vector<at::Tensor> outs;
  for (auto* p : projections) outs.push_back(p->forward(x));
  return outs;
}

}  // namespace agenttune
