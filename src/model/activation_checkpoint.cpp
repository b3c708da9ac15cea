#include "agenttune/model/activation_checkpoint.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace agenttune {

namespace {

// What backward needs to re-run the layer. Rope tables and the mask carry no gradient, so they
// travel here rather than through save_for_backward; the holder keeps the layer alive until then.
struct Recompute : torch::CustomClassHolder {
  Recompute(DecoderLayer l, RopeTables r, AttentionSpec s)
      : layer(std::move(l)), rope(std::move(r)), spec(std::move(s)) {}
  DecoderLayer layer;
  RopeTables rope;
  AttentionSpec spec;
};

// The reentrant scheme of torch.utils.checkpoint(use_reentrant=True): the layer's parameters are
// not inputs of the Function; backward re-runs the layer and back-propagates through that fresh
// graph, which accumulates their .grad directly.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const c10::intrusive_ptr<Recompute>& fn) {
    // apply() runs this with grad mode off: no activation of the layer is kept.
    ctx->save_for_backward({x});
    ctx->saved_data["fn"] = at::IValue::make_capsule(fn);
    return fn->layer->forward(x, fn->rope, fn->spec, nullptr);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto fn = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["fn"].toCapsule());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::AutoGradMode grad_on(true);
    auto out = fn->layer->forward(x, fn->rope, fn->spec, nullptr);
    torch::autograd::backward({out}, {grad_out[0]});
    return {x.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed_layer(DecoderLayer& layer, const at::Tensor& x, const RopeTables& rope,
                              const AttentionSpec& spec) {
  if (!at::GradMode::is_enabled()) return layer->forward(x, rope, spec, nullptr);
  // A Function whose inputs need no grad is never back-propagated, which would silently leave
  // the layer's parameters without grads (e.g. frozen embeddings): make the input a grad leaf.
  auto input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return CheckpointedLayer::apply(input, c10::make_intrusive<Recompute>(layer, rope, spec));
}

}  // namespace agenttune
