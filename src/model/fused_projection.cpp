#include "agenttune/model/fused_projection.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "agenttune/util/error.h"

namespace agenttune {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Where each slot's columns sit in the fused output, and how the slot is viewed.
struct Layout {
  std::vector<int64_t> offset, out, heads, rope;  // rope: 0 or 1 (kept in saved_data as int lists)
  int64_t total = 0;
  size_t size() const { return out.size(); }
};

Layout make_layout(std::vector<int64_t> out, std::vector<int64_t> heads, std::vector<int64_t> rope) {
  Layout l;
  for (int64_t o : out) l.offset.push_back(l.total), l.total += o;
  l.out = std::move(out), l.heads = std::move(heads), l.rope = std::move(rope);
  return l;
}

// The rows of every slot's weight as one [total, in] view, starting at the first weight.
at::Tensor fused_weight(const at::Tensor& first, int64_t total) {
  return first.as_strided({total, first.size(1)}, {first.size(1), 1});
}

// Slot i's columns of a [B, T, total] buffer, in the slot's output layout.
at::Tensor slot_view(const at::Tensor& buffer, const Layout& l, size_t i) {
  auto cols = buffer.narrow(-1, l.offset[i], l.out[i]);
  if (l.heads[i] <= 0) return cols;
  return cols.view({buffer.size(0), buffer.size(1), l.heads[i], l.out[i] / l.heads[i]}).transpose(1, 2);
}

// The forward without autograd: one matmul, then per slot its delta (ProjectionImpl::forward's
// y + delta, cast back) and its rotation, in place in the fused output.
std::vector<at::Tensor> project(const at::Tensor& x, const at::Tensor& first_weight, const std::vector<at::Tensor>& deltas,
                                const Layout& l, const RopeTables& rope) {
  auto y = at::linear(x, fused_weight(first_weight, l.total));
  std::vector<at::Tensor> outs;
  for (size_t i = 0; i < l.size(); ++i) {
    if (deltas[i].defined()) {
      auto cols = y.narrow(-1, l.offset[i], l.out[i]);
      if (deltas[i].scalar_type() == cols.scalar_type()) cols.add_(deltas[i]);
      else cols.copy_(cols + deltas[i]);
    }
    outs.push_back(slot_view(y, l, i));
    if (l.rope[i]) rope_in_place(outs.back(), rope);
  }
  return outs;
}

Layout saved_layout(AutogradContext* ctx) {
  return make_layout(ctx->saved_data["out"].toIntVector(), ctx->saved_data["heads"].toIntVector(),
                     ctx->saved_data["rope"].toIntVector());
}

// Autograd records one input per tensor and none may be undefined, so the tensors travel as one
// list: x, every slot's weight, the deltas there are (`delta_slot`: whose each is), then, when a slot
// rotates, the rope tables. Outputs: one view per slot.
struct FusedProjections : torch::autograd::Function<FusedProjections> {
  static variable_list forward(AutogradContext* ctx, at::TensorList inputs, const std::vector<int64_t>& out,
                               const std::vector<int64_t>& heads, const std::vector<int64_t>& rope,
                               const std::vector<int64_t>& delta_slot) {
    const Layout l = make_layout(out, heads, rope);
    const size_t n = l.size(), tables = 1 + n + delta_slot.size();
    std::vector<at::Tensor> deltas(n);
    for (size_t j = 0; j < delta_slot.size(); ++j) deltas[static_cast<size_t>(delta_slot[j])] = inputs[1 + n + j];
    const RopeTables rope_tables = inputs.size() > tables ? RopeTables{inputs[tables], inputs[tables + 1]} : RopeTables{};
    ctx->save_for_backward({inputs[0], inputs[1], rope_tables.cos, rope_tables.sin});
    ctx->saved_data["out"] = l.out;
    ctx->saved_data["heads"] = l.heads;
    ctx->saved_data["rope"] = l.rope;
    ctx->saved_data["delta_slot"] = delta_slot;
    std::vector<int64_t> dtypes;  // each delta's dtype: its grad is returned in it
    for (const auto& d : deltas) dtypes.push_back(d.defined() ? static_cast<int64_t>(d.scalar_type()) : -1);
    ctx->saved_data["delta_dtypes"] = dtypes;
    return project(inputs[0], inputs[1], deltas, l, rope_tables);
  }

  // One grad for every slot's columns (the rotation transposed where the slot rotates, zeros where no
  // grad came), then one matmul each for the input and the fused weight.
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w0 = saved[1];
    const RopeTables rope{saved[2], saved[3]};
    const Layout l = saved_layout(ctx);
    const auto delta_slot = ctx->saved_data["delta_slot"].toIntVector();
    const auto dtypes = ctx->saved_data["delta_dtypes"].toIntVector();
    const size_t n = l.size();
    const int64_t rows = x.numel() / x.size(-1);
    auto grad = at::empty({x.size(0), x.size(1), l.total}, x.options());
    for (size_t i = 0; i < n; ++i) {
      auto slot = slot_view(grad, l, i);
      if (!grad_out[i].defined()) slot.zero_();
      else if (l.rope[i]) rope_transposed_to(slot, grad_out[i], rope);
      else slot.copy_(grad_out[i]);
    }
    const auto flat = grad.view({rows, l.total});
    // One per tensor of the input list (the rope tables get none), then one per further argument.
    variable_list result(1 + n + delta_slot.size() + (rope.cos.defined() ? 2 : 0) + 4);
    if (ctx->needs_input_grad(0)) result[0] = flat.mm(fused_weight(w0, l.total)).view(x.sizes());
    at::Tensor grad_weight;
    for (size_t i = 0; i < n; ++i) {
      if (!ctx->needs_input_grad(1 + i)) continue;
      if (!grad_weight.defined()) grad_weight = flat.t().mm(x.reshape({rows, x.size(-1)}));
      result[1 + i] = grad_weight.narrow(0, l.offset[i], l.out[i]);
    }
    for (size_t j = 0; j < delta_slot.size(); ++j) {
      const auto i = static_cast<size_t>(delta_slot[j]);
      if (ctx->needs_input_grad(1 + n + j))
        result[1 + n + j] = grad.narrow(-1, l.offset[i], l.out[i]).to(static_cast<at::ScalarType>(dtypes[i]));
    }
    return result;
  }
};

}  // namespace

bool fuses_projections_on(const c10::Device& device) { return !device.is_cpu(); }

bool fusable(const std::vector<FusedSlot>& slots) {
  if (slots.empty()) return false;
  const auto& first = slots[0].weight;
  for (size_t i = 0; i < slots.size(); ++i) {
    const auto& w = slots[i].weight;
    if (!w.defined() || w.dim() != 2 || !w.is_contiguous() || w.scalar_type() != first.scalar_type() ||
        w.device() != first.device() || w.size(1) != first.size(1) || !w.has_storage() ||
        !w.storage().is_alias_of(first.storage()))
      return false;
    if (i > 0 && w.storage_offset() != slots[i - 1].weight.storage_offset() + slots[i - 1].weight.numel()) return false;
  }
  return true;
}

std::vector<at::Tensor> fused_projections(const at::Tensor& x, const std::vector<FusedSlot>& slots,
                                          const RopeTables& rope) {
  if (!fusable(slots)) fail("fused_projections: the {} weights are not consecutive rows of one buffer", slots.size());
  std::vector<int64_t> out, heads, rotate, delta_slot;
  std::vector<at::Tensor> inputs{x}, deltas;
  bool grads = x.requires_grad();
  for (const auto& slot : slots) {
    out.push_back(slot.weight.size(0)), heads.push_back(slot.heads), rotate.push_back(slot.rope ? 1 : 0);
    inputs.push_back(slot.weight);
    grads = grads || slot.weight.requires_grad();
  }
  for (size_t i = 0; i < slots.size(); ++i) {
    deltas.push_back(slots[i].delta);
    if (!slots[i].delta.defined()) continue;
    inputs.push_back(slots[i].delta);
    delta_slot.push_back(static_cast<int64_t>(i));
    grads = grads || slots[i].delta.requires_grad();
  }
  const Layout l = make_layout(out, heads, rotate);
  const bool rotates = std::find(l.rope.begin(), l.rope.end(), 1) != l.rope.end();
  if (!at::GradMode::is_enabled() || !grads) return project(x, slots[0].weight, deltas, l, rotates ? rope : RopeTables{});
  if (rotates) inputs.push_back(rope.cos), inputs.push_back(rope.sin);
  return FusedProjections::apply(at::TensorList(inputs), l.out, l.heads, l.rope, delta_slot);
}
void flatten_layer_weights(LlamaForCausalLM& model) {
  at::NoGradGuard ng;
  for (auto& layer : model->model->layers) {
    std::vector<at::Tensor> mats;
    int64_t n = 0;
    for (auto& p : layer->parameters())
      if (p.dim() == 2) mats.push_back(p), n += p.numel();
    if (mats.empty()) continue;
    auto flat = at::empty({n}, mats[0].options());
    int64_t offset = 0;
    for (auto& p : mats) {
      auto view = flat.narrow(0, offset, p.numel()).view(p.sizes());
      view.copy_(p);
      p.set_data(view);
      offset += p.numel();
    }
  }
}

}  // namespace agenttune
