#include "agenttune/model/lora.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <cmath>
#include <vector>

#include "agenttune/quant/nf4.h"
#include "agenttune/util/error.h"
#include "agenttune/util/seeded.h"

namespace agenttune {

namespace {

// One projection of a decoder layer as the module tree holds it: its full name, the module that
// registered it and the holder that module's forward uses (replacing the projection updates both).
struct ProjectionSlot {
  std::string name;
  std::string_view target;  // the PEFT target_modules name
  torch::nn::Module* parent;
  Projection* holder;
};

// In kAdapterTargets order within each layer.
std::vector<ProjectionSlot> projection_slots(LlamaForCausalLM& model) {
  std::vector<ProjectionSlot> slots;
  for (size_t i = 0; i < model->model->layers.size(); ++i) {
    auto& layer = model->model->layers[i];
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    auto* attn = layer->self_attn.get();
    auto* mlp = layer->mlp.get();
    const std::array<std::pair<torch::nn::Module*, Projection*>, 7> held = {
        {{attn, &attn->q_proj}, {attn, &attn->k_proj}, {attn, &attn->v_proj}, {attn, &attn->o_proj},
         {mlp, &mlp->gate_proj}, {mlp, &mlp->up_proj}, {mlp, &mlp->down_proj}}};
    for (size_t k = 0; k < held.size(); ++k) {
      const std::string_view target = kAdapterTargets[k];
      const char* block = held[k].first == attn ? "self_attn." : "mlp.";
      slots.push_back({prefix + block + std::string(target), target, held[k].first, held[k].second});
    }
  }
  return slots;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

bool is_adapter_parameter(std::string_view name) { return ends_with(name, ".lora_A") || ends_with(name, ".lora_B"); }

at::Tensor initial_adapter_value(const AdapterConfig& config, const std::string& name, at::IntArrayRef sizes) {
  if (sizes.size() != 2) fail("initial_adapter_value: {} must be a matrix, got {} dims", name, sizes.size());
  if (ends_with(name, ".lora_B")) return at::zeros(sizes, at::kFloat);
  if (!ends_with(name, ".lora_A")) fail("initial_adapter_value: {} is not an adapter parameter", name);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(splitmix64(config.init_seed ^ splitmix64(hash_text(name))));
  // torch.nn.init.kaiming_uniform_(a=sqrt(5), mode fan_in)'s bound in its own double arithmetic, so
  // the draws are bit-equal to torch's for the same generator state.
  const double a = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1 + std::pow(a, 2)));
  const double bound = std::sqrt(3.0) * (gain / std::sqrt(static_cast<double>(sizes[1])));
  return at::empty(sizes, at::kFloat).uniform_(-bound, bound, gen);
}

bool has_adapters(const LlamaForCausalLM& model) {
  for (const auto& p : model->named_parameters())
    if (is_adapter_parameter(p.key())) return true;
  return false;
}

void add_adapters(LlamaForCausalLM& model, const AdapterConfig& config) {
  if (!config.enabled()) fail("add_adapters: the adapter kind is none");
  config.validate("add_adapters: adapter");
  if (has_adapters(model)) fail("add_adapters: the model already has adapters");
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  at::NoGradGuard no_grad;
  for (auto& slot : projection_slots(model)) {
    if (!config.targets(slot.target)) continue;
    auto& proj = **slot.holder;
    proj.attach_adapter(config.rank, config.scale(), config.dropout);
    if (!proj.weight.is_meta()) {
      proj.lora_A.copy_(initial_adapter_value(config, slot.name + ".lora_A", proj.lora_A.sizes()));
      proj.lora_B.zero_();
    }
    proj.lora_A.set_requires_grad(true);
    proj.lora_B.set_requires_grad(true);
  }
}

void merge_adapters(LlamaForCausalLM& model) {
  at::NoGradGuard no_grad;
  for (auto& slot : projection_slots(model)) {
    auto& proj = **slot.holder;
    if (!proj.has_adapter()) continue;
    if (proj.quantized()) fail("merge_adapters: {} is NF4-quantised: dequantize_projections first", slot.name);
    if (proj.weight.is_meta()) fail("merge_adapters: {} is on the meta device (no values to merge)", slot.name);
    // PEFT's get_delta_weight: (B @ A) * scaling in the adapter dtype, added into W's dtype.
    proj.weight.add_(at::mm(proj.lora_B, proj.lora_A) * proj.lora_scale);
    auto weight = proj.weight;
    *slot.holder = Projection(slot.parent->replace_module(std::string(slot.target), Projection(weight, proj.bias)));
  }
}

// ---- QLoRA (nf4) ----

namespace {

// `next` takes over `from`'s adapter (the same tensors) and its slot in the module tree.
void replace_projection(const ProjectionSlot& slot, ProjectionImpl& from, Projection next) {
  if (from.has_adapter()) {
    next->lora_A = next->register_parameter("lora_A", from.lora_A, /*requires_grad=*/true);
    next->lora_B = next->register_parameter("lora_B", from.lora_B, /*requires_grad=*/true);
    next->lora_scale = from.lora_scale;
    next->lora_dropout = from.lora_dropout;
  }
  if (!from.is_training()) next->eval();
  *slot.holder = Projection(slot.parent->replace_module(std::string(slot.target), std::move(next)));
}

}  // namespace

void quantize_projections(LlamaForCausalLM& model, bool quantise_values) {
  at::NoGradGuard no_grad;
  for (auto& slot : projection_slots(model)) {
    auto& proj = **slot.holder;
    if (proj.quantized()) fail("quantize_projections: {} is NF4-quantised already", slot.name);
    const auto& w = proj.weight;
    auto record = at::empty({quant::nf4_record_bytes(w.numel())}, w.options().dtype(at::kByte));
    if (quantise_values && !w.is_meta()) quant::pack_nf4(quant::quantize_nf4(w, quant::nf4_tables(w.device())), record);
    replace_projection(slot, proj, Projection(record, w.sizes().vec(), proj.bias));
  }
}

bool has_quantized_projections(const LlamaForCausalLM& model) {
  for (const auto& p : model->named_parameters())
    if (ends_with(p.key(), ".weight_nf4")) return true;
  return false;
}

void dequantize_projections(LlamaForCausalLM& model, c10::ScalarType dtype) {
  at::NoGradGuard no_grad;
  for (auto& slot : projection_slots(model)) {
    auto& proj = **slot.holder;
    if (!proj.quantized()) continue;
    const auto& r = proj.weight_nf4;
    if (r.is_meta()) fail("dequantize_projections: {} is on the meta device (no values)", slot.name);
    const auto& tables = quant::nf4_tables(r.device());
    auto weight = quant::dequantize_nf4(quant::nf4_record_view(r, proj.nf4_shape), dtype, tables);
    replace_projection(slot, proj, Projection(weight.set_requires_grad(false), proj.bias));
  }
}

}  // namespace agenttune
