#include "agenttune/model/activation_checkpoint.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace agenttune {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs to re-run the layer. Rope tables and the mask carry no gradient, so they
// travel here rather than through save_for_backward; the holder keeps the layer alive until then.
struct LayerRerun : torch::CustomClassHolder {
  LayerRerun(DecoderLayer l, RopeTables r, AttentionSpec s)
      : layer(std::move(l)), rope(std::move(r)), spec(std::move(s)) {}
  DecoderLayer layer;
  RopeTables rope;
  AttentionSpec spec;
};

// The reentrant scheme of torch.utils.checkpoint(use_reentrant=True): the layer's parameters are
// not inputs of the Function; backward re-runs the layer and back-propagates through that fresh
// graph, which accumulates their .grad directly.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const c10::intrusive_ptr<LayerRerun>& fn) {
    // apply() runs this with grad mode off: no activation of the layer is kept.
    ctx->save_for_backward({x});
    ctx->saved_data["fn"] = at::IValue::make_capsule(fn);
    return fn->layer->forward(x, fn->rope, fn->spec, nullptr);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto fn = c10::static_intrusive_pointer_cast<LayerRerun>(ctx->saved_data["fn"].toCapsule());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::AutoGradMode grad_on(true);
    auto out = fn->layer->forward(x, fn->rope, fn->spec, nullptr);
    torch::autograd::backward({out}, {grad_out[0]});
    return {x.grad(), at::Tensor()};
  }
};

struct HeldOp : torch::CustomClassHolder {
  explicit HeldOp(BinaryOp f) : fn(std::move(f)) {}
  BinaryOp fn;
};

c10::intrusive_ptr<HeldOp> held_op(AutogradContext* ctx) {
  return c10::static_intrusive_pointer_cast<HeldOp>(ctx->saved_data["op"].toCapsule());
}

// The op re-run in backward on the saved a and b (the first two saved tensors), as fresh leaves
// that require grad where the Function's inputs did: its graph is the one forward did not keep.
struct Rerun {
  at::Tensor a, b, out;
};
Rerun rerun(AutogradContext* ctx) {
  auto saved = ctx->get_saved_variables();
  auto leaf = [&](size_t i) {
    auto t = saved[i].detach();
    return ctx->needs_input_grad(i) ? t.requires_grad_(true) : t;
  };
  Rerun r{leaf(0), leaf(1), {}};
  at::AutoGradMode grad_on(true);
  r.out = held_op(ctx)->fn(r.a, r.b);
  return r;
}

// d(r.out)/d(a, b) for the incoming `grad`, undefined where no grad is wanted.
std::pair<at::Tensor, at::Tensor> input_grads(const Rerun& r, const at::Tensor& grad) {
  std::vector<at::Tensor> wanted;
  for (const auto* t : {&r.a, &r.b})
    if (t->requires_grad()) wanted.push_back(*t);
  if (wanted.empty()) return {};
  auto g = torch::autograd::grad({r.out}, wanted, {grad}, /*retain_graph=*/false, /*create_graph=*/false,
                                 /*allow_unused=*/true);
  at::Tensor ga, gb;
  size_t k = 0;
  if (r.a.requires_grad()) ga = g[k++];
  if (r.b.requires_grad()) gb = g[k++];
  return {ga, gb};
}

struct RecomputedOp : torch::autograd::Function<RecomputedOp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b,
                            const c10::intrusive_ptr<HeldOp>& op) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["op"] = at::IValue::make_capsule(op);
    return op->fn(a, b);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto [ga, gb] = input_grads(rerun(ctx), grad_out[0]);
    return {ga, gb, at::Tensor()};
  }
};

struct SwiGLULinear : torch::autograd::Function<SwiGLULinear> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up,
                            const at::Tensor& weight) {
    ctx->save_for_backward({gate, up, weight});
    return at::linear(swiglu(gate, up), weight);
  }

  // at::linear without a bias folds [.., in] to [rows, in] and runs mm against weight.t(); the
  // products below are the ones autograd's mm backward forms for a row-major input and that
  // transposed weight (mm_mat1_backward: grad.mm(weight); mm_mat2_backward: grad.t().mm(input),
  // transposed back), then mul's (grad * other) and silu's (silu_backward), so the bits are the
  // ones kept activations give.
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &gate = saved[0], &up = saved[1], &weight = saved[2];
    const auto grad = grad_out[0].reshape({-1, grad_out[0].size(-1)});
    at::Tensor act = at::silu(gate), grad_gate, grad_up, grad_weight;
    if (ctx->needs_input_grad(2)) grad_weight = grad.t().mm((act * up).reshape({-1, gate.size(-1)}));
    if (ctx->needs_input_grad(0) || ctx->needs_input_grad(1)) {
      auto grad_product = grad.mm(weight).view(gate.sizes());
      if (ctx->needs_input_grad(1)) grad_up = grad_product * act;
      act.reset();
      if (ctx->needs_input_grad(0)) grad_gate = at::silu_backward(grad_product * up, gate);
    }
    return {grad_gate, grad_up, grad_weight};
  }
};

}  // namespace

at::Tensor checkpointed_layer(DecoderLayer& layer, const at::Tensor& x, const RopeTables& rope,
                              const AttentionSpec& spec) {
  if (!at::GradMode::is_enabled()) return layer->forward(x, rope, spec, nullptr);
  // A Function whose inputs need no grad is never back-propagated, which would silently leave
  // the layer's parameters without grads (e.g. frozen embeddings): make the input a grad leaf.
  auto input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return CheckpointedLayer::apply(input, c10::make_intrusive<LayerRerun>(layer, rope, spec));
}

at::Tensor recomputed(const BinaryOp& fn, const at::Tensor& a, const at::Tensor& b) {
  if (!at::GradMode::is_enabled()) return fn(a, b);
  return RecomputedOp::apply(a, b, c10::make_intrusive<HeldOp>(fn));
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) { return at::silu(gate) * up; }

at::Tensor swiglu_linear_recomputed(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight) {
  if (!at::GradMode::is_enabled()) return at::linear(swiglu(gate, up), weight);
  return SwiGLULinear::apply(gate, up, weight);
}

}  // namespace agenttune
