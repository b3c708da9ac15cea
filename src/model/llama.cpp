#include "agenttune/model/llama.h"
#include "agenttune/util/error.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "agenttune/model/activation_checkpoint.h"
#include "agenttune/model/adapted_projection.h"
#include "agenttune/model/flops.h"
#include "agenttune/model/fused_projection.h"
#include "agenttune/model/loss.h"
#include "agenttune/quant/nf4_linear.h"
#include "allocation.h"

namespace agenttune {

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, const ParamOptions& params, bool with_bias) {
  weight = register_parameter("weight", at::empty({out, in}, params));
  if (with_bias) bias = register_parameter("bias", at::empty({out}, params));
}

ProjectionImpl::ProjectionImpl(const at::Tensor& w, const at::Tensor& b) {
  weight = register_parameter("weight", w, w.requires_grad());
  if (b.defined()) bias = register_parameter("bias", b, b.requires_grad());
}

// nf4: the record is registered as a frozen parameter so the engine shards and gathers its bytes.
ProjectionImpl::ProjectionImpl(const at::Tensor& record, std::vector<int64_t> shape, const at::Tensor& b)
    : nf4_shape(std::move(shape)) {
  weight_nf4 = register_parameter("weight_nf4", record, /*requires_grad=*/false);
  if (b.defined()) bias = register_parameter("bias", b, b.requires_grad());
}

at::Tensor ProjectionImpl::forward(const at::Tensor& x) {
  if (adapted_together(x, {this})) return adapted_projections(x, {this})[0];  // one autograd node
  auto y = !quantized()        ? at::linear(x, weight, bias)
           : bias.defined()    ? quant::nf4_linear(x, weight_nf4, nf4_shape) + bias
                               : quant::nf4_linear(x, weight_nf4, nf4_shape);
  if (!has_adapter()) return y;
  // PEFT's `result + delta` (promoting when the adapter is float32 on a bf16 base), then back to
  // the base output's dtype. Of the same dtype, the delta goes into y in place: no third
  // [tokens, out] tensor (nothing's backward reads y).
  auto delta = adapter_delta(x);
  if (delta.scalar_type() == y.scalar_type()) return y.add_(delta);
  return (y + delta).to(y.scalar_type());
}

void ProjectionImpl::attach_adapter(int64_t rank, double scale, double dropout) {
  if (has_adapter()) fail("attach_adapter: this projection already has an adapter");
  if (quantized()) fail("attach_adapter: the projection is NF4-quantised; attach adapters before quantize_projections");
  // Float32 like PEFT's adapters (it up-casts them on a bf16 base); a sharded run's compute copies
  // are cast to the compute dtype by the engine like every other parameter.
  auto options = weight.options().dtype(at::kFloat);
  lora_A = register_parameter("lora_A", at::empty({rank, weight.size(1)}, options));
  lora_B = register_parameter("lora_B", at::empty({weight.size(0), rank}, options));
  lora_scale = scale;
  lora_dropout = dropout;
}

at::Tensor ProjectionImpl::adapter_delta(const at::Tensor& x) {
  if (!has_adapter()) return {};
  auto in = x.scalar_type() == lora_A.scalar_type() ? x : x.to(lora_A.scalar_type());
  if (lora_dropout > 0) in = at::dropout(in, lora_dropout, is_training());
  // The scale on the rank-wide product, not on the [tokens, out] delta: the same value up to
  // rounding for a fraction of the memory traffic, forward and backward.
  return at::linear(at::linear(in, lora_A) * lora_scale, lora_B);
}

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab, int64_t dim, const ParamOptions& params) {
  weight = register_parameter("weight", at::empty({vocab, dim}, params));
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, const ParamOptions& params) : eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}, params));
}

namespace {

// Normalise in fp32 and cast back before the weight, exactly as HF does: bf16 runs then round
// the same way and parity holds beyond fp32.
// at::rms_norm without a weight is that normalisation in one kernel (the same fp32 bits on CPU;
// fused on CUDA), and it saves only its input and the rstd for backward.
// In fp32 to() is a no-op and rms_norm reads x twice: the alias gives x one consumer inside the
// norm, so its gradient is residual + norm in one order whether the norm is kept or recomputed
// (selective), not three terms summed in whatever order the engine reaches them.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto upcast = x.scalar_type() == at::kFloat ? x.alias() : x.to(at::kFloat);
  auto h = at::rms_norm(upcast, {x.size(-1)}, std::nullopt, eps);
  return weight * h.to(x.scalar_type());
}

}  // namespace

at::Tensor RMSNormImpl::forward(const at::Tensor& x, bool recompute) {
  if (!recompute) return rms_norm(x, weight, eps_);
  return recomputed([eps = eps_](const at::Tensor& a, const at::Tensor& w) { return rms_norm(a, w, eps); }, x, weight);
}

AttentionImpl::AttentionImpl(const LlamaConfig& c, const ParamOptions& params)
    : n_heads_(c.num_attention_heads),
      n_kv_heads_(c.num_key_value_heads),
      head_dim_(c.resolved_head_dim()) {
  q_proj = register_module("q_proj", Projection(c.hidden_size, n_heads_ * head_dim_, params, c.qkv_bias()));
  k_proj = register_module("k_proj", Projection(c.hidden_size, n_kv_heads_ * head_dim_, params, c.qkv_bias()));
  v_proj = register_module("v_proj", Projection(c.hidden_size, n_kv_heads_ * head_dim_, params, c.qkv_bias()));
  o_proj = register_module("o_proj", Projection(n_heads_ * head_dim_, c.hidden_size, params, c.o_bias()));
  if (c.qk_norm()) {  // HF's Qwen3Attention registers them after o_proj
    q_norm = register_module("q_norm", RMSNorm(head_dim_, c.rms_norm_eps, params));
    k_norm = register_module("k_norm", RMSNorm(head_dim_, c.rms_norm_eps, params));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> AttentionImpl::project_qkv(const at::Tensor& x, const RopeTables& rope) {
  const int64_t B = x.size(0), T = x.size(1);
  // [B, T, heads * hd] -> [B, heads, T, hd], normalised per head where the family does (Qwen3:
  // before RoPE, over the head's last dim, as HF does on its [B, T, heads, hd] view).
  auto heads = [&](const at::Tensor& y, int64_t n, RMSNorm norm) {
    auto h = y.view({B, T, n, head_dim_});
    return (norm ? norm(h) : h).transpose(1, 2);
  };
  // The fused kernel rotates in place right after the matmul: a bias or a norm comes between the
  // two, so then the fused matmul only projects and the rest follows as on the separate path.
  const bool between = q_proj->bias.defined() || q_norm;
  std::vector<FusedSlot> slots = {{q_proj->weight, {}, between ? 0 : n_heads_, !between},
                                  {k_proj->weight, {}, between ? 0 : n_kv_heads_, !between},
                                  {v_proj->weight, {}, between ? 0 : n_kv_heads_, false}};
  if (fuses_projections_on(x.device()) && fusable(slots)) {
    slots[0].delta = q_proj->adapter_delta(x);
    slots[1].delta = k_proj->adapter_delta(x);
    slots[2].delta = v_proj->adapter_delta(x);
    auto qkv = fused_projections(x, slots, rope);
    if (!between) return {qkv[0], qkv[1], qkv[2]};
    auto biased = [](const at::Tensor& y, const Projection& p) { return p->bias.defined() ? y + p->bias : y; };
    return {apply_rope(heads(biased(qkv[0], q_proj), n_heads_, q_norm), rope),
            apply_rope(heads(biased(qkv[1], k_proj), n_kv_heads_, k_norm), rope),
            heads(biased(qkv[2], v_proj), n_kv_heads_, nullptr)};
  }
  // Adapted, the three are one autograd node with one product for their A matrices (model/adapted_projection.h).
  const auto y = project_each(x, {q_proj.get(), k_proj.get(), v_proj.get()});
  return {apply_rope(heads(y[0], n_heads_, q_norm), rope), apply_rope(heads(y[1], n_kv_heads_, k_norm), rope),
          heads(y[2], n_kv_heads_, nullptr)};
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const RopeTables& rope,
                                  const AttentionSpec& spec, LayerCache* cache) {
  int64_t B = x.size(0), T = x.size(1);
  auto [q, k, v] = project_qkv(x, rope);

  int64_t past = cache ? cache->length : 0;
  if (cache) std::tie(k, v) = cache->append(k, v);

  if (spec.cu_seqlens) {
    if (spec.mask || cache || !varlen_attention_runs(x.device(), x.scalar_type()))
      fail("attention spec: varlen document spans for {} activations on {}{}{}; build the spec with "
           "attention_spec() for the device and dtype the model computes in",
           dtype_name(x.scalar_type()), x.device().str(), spec.mask ? ", together with a mask" : "",
           cache ? ", with a KV cache" : "");
    // Packed documents without a dense mask: the rows end to end as one varlen batch, each
    // document causal on its own; flash attention takes fewer kv heads natively.
    auto flat = [&](const at::Tensor& t, int64_t heads) { return t.transpose(1, 2).reshape({B * T, heads, head_dim_}); };
    auto out = std::get<0>(at::_flash_attention_forward(flat(q, n_heads_), flat(k, n_kv_heads_), flat(v, n_kv_heads_),
                                                        *spec.cu_seqlens, *spec.cu_seqlens, spec.max_seqlen,
                                                        spec.max_seqlen, 0.0, /*is_causal=*/true,
                                                        /*return_debug_mask=*/false));
    return o_proj(out.reshape({B, T, n_heads_ * head_dim_}));
  }
  std::optional<at::Tensor> mask = spec.mask;
  bool causal = false;
  if (!mask) {
    if (past == 0) {
      causal = T > 1;
    } else if (T > 1) {
      // New tokens see the whole cache plus the causal part of themselves (bottom-right aligned;
      // is_causal would align top-left).
      auto S = past + T;
      mask = at::ones({T, S}, x.options().dtype(at::kBool)).tril(past);
    }
  }
  auto out = at::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, std::nullopt,
                                              /*enable_gqa=*/n_kv_heads_ != n_heads_);
  return o_proj(out.transpose(1, 2).reshape({B, T, n_heads_ * head_dim_}));
}

MLPImpl::MLPImpl(const LlamaConfig& c, const ParamOptions& params) {
  gate_proj = register_module("gate_proj", Projection(c.hidden_size, c.intermediate_size, params));
  up_proj = register_module("up_proj", Projection(c.hidden_size, c.intermediate_size, params));
  down_proj = register_module("down_proj", Projection(c.intermediate_size, c.hidden_size, params));
}

at::Tensor MLPImpl::forward(const at::Tensor& x, bool recompute) {
  std::vector<FusedSlot> slots = {{gate_proj->weight}, {up_proj->weight}};
  at::Tensor gate, up;
  if (fuses_projections_on(x.device()) && fusable(slots)) {
    slots[0].delta = gate_proj->adapter_delta(x);
    slots[1].delta = up_proj->adapter_delta(x);
    auto gate_up = fused_projections(x, slots, {});
    gate = gate_up[0], up = gate_up[1];
  } else {
    const auto gate_up = project_each(x, {gate_proj.get(), up_proj.get()});
    gate = gate_up[0], up = gate_up[1];
  }
  if (recompute && !down_proj->has_adapter() && !down_proj->quantized())  // nf4: no dense weight to pass
    return swiglu_linear_recomputed(gate, up, down_proj->weight);
  // A LoRA adapter on down_proj needs the SwiGLU product for lora_A's gradient: it is kept.
  return down_proj(swiglu(gate, up));
}

DecoderLayerImpl::DecoderLayerImpl(const LlamaConfig& c, const ParamOptions& params) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, params));
  self_attn = register_module("self_attn", Attention(c, params));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, params));
  mlp = register_module("mlp", MLP(c, params));
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& x, const RopeTables& rope,
                                     const AttentionSpec& spec, LayerCache* cache, bool selective) {
  // RoPE is left alone: its graph keeps only the shared cos/sin tables (q and k after rotation are
  // attention's inputs, kept like every matmul output), so recomputing it would free nothing.
  auto h = x + self_attn(input_layernorm(x, selective), rope, spec, cache);
  return h + mlp(post_attention_layernorm(h, selective), selective);
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c, const ParamOptions& params) {
  embed_tokens = register_module("embed_tokens", TokenEmbedding(c.vocab_size, c.hidden_size, params));
  auto list = torch::nn::ModuleList();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(DecoderLayer(c, params));
    list->push_back(layers.back());
  }
  register_module("layers", list);
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, params));
}

namespace {

// "a model of 2.006e+15 parameters (hidden_size 1000000, intermediate_size 64, vocab_size 1000000000, 2 layers) in
// float32 on cpu".
std::string model_description(const LlamaConfig& c, const ParamOptions& params) {
  return fmt::format("a model of {:.4g} parameters (hidden_size {}, intermediate_size {}, vocab_size {}, {} layers) "
                     "in {} on {}",
                     count_parameters_approx(c), c.hidden_size, c.intermediate_size, c.vocab_size,
                     c.num_hidden_layers, dtype_name(params.dtype().toScalarType()), params.device().str());
}

}  // namespace

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c, const ParamOptions& params)
    : config_(c), rope_(c) {
  const double bytes = count_parameters_approx(c) * static_cast<double>(params.dtype().itemsize());
  model_detail::allocate_named(model_description(c, params), bytes, params.device(), [&] {
    model = register_module("model", LlamaModel(c, params));
    if (!c.tie_word_embeddings)
      lm_head = register_module("lm_head", Projection(c.hidden_size, c.vocab_size, params));
  });
}

UnitInputs LlamaForCausalLMImpl::unit_inputs(const at::Tensor& positions, c10::ScalarType dtype,
                                             const AttentionSpec& spec, KVCache* cache) const {
  UnitInputs in;
  in.rope = rope_.tables(positions, dtype);
  in.spec = spec;
  in.cache = cache;
  return in;
}

bool LlamaForCausalLMImpl::checkpointed(size_t unit) const {
  return recompute == Recompute::Full && unit > 0 && unit + 1 < num_units();
}

at::Tensor LlamaForCausalLMImpl::run_unit(size_t unit, const at::Tensor& x, const UnitInputs& in, bool checkpoint) {
  if (unit == 0) return model->embed_tokens(x);
  if (unit + 1 == num_units()) {
    auto h = model->norm(x);
    if (!in.targets.defined())
      return logits(in.head_rows.defined() ? h.reshape({-1, h.size(-1)}).index_select(0, in.head_rows) : h);
    auto flat_h = h.reshape({-1, h.size(-1)});
    auto flat_t = in.targets.reshape({-1});
    if (in.trained >= 0 && in.trained < flat_t.numel()) {
      // Only trained positions reach the head; their count comes from the host, so selecting
      // them needs no sync.
      auto rows = at::nonzero_static(flat_t != kIgnoreIndex, in.trained).reshape({-1});
      flat_h = flat_h.index_select(0, rows);
      flat_t = flat_t.index_select(0, rows);
    }
    // With the count known, every row left is trained: the loss masks none.
    return linear_cross_entropy_sum(flat_h, head_weight(), flat_t, 0, in.head_weight_grad, in.trained >= 0);
  }
  auto& layer = model->layers[unit - 1];
  LayerCache* cache = in.cache ? &in.cache->layers[unit - 1] : nullptr;
  if (checkpoint && !cache) return checkpointed_layer(layer, x, in.rope, in.spec);
  return layer(x, in.rope, in.spec, cache, recompute == Recompute::Selective);
}

at::Tensor LlamaForCausalLMImpl::run_units(const at::Tensor& tokens, const UnitInputs& in, const UnitCall& around) {
  at::Tensor h = tokens;
  for (size_t u = 0; u < num_units(); ++u)
    h = around ? around(u, h) : run_unit(u, h, in, !in.cache && at::GradMode::is_enabled() && checkpointed(u));
  return h;
}

at::Tensor LlamaForCausalLMImpl::forward(const at::Tensor& tokens, const at::Tensor& positions,
                                         const AttentionSpec& spec, KVCache* cache) {
  auto dtype = model->embed_tokens->weight.scalar_type();
  return run_units(tokens, unit_inputs(positions, dtype, spec, cache));
}

at::Tensor LlamaForCausalLMImpl::loss_sum(const at::Tensor& tokens, const at::Tensor& positions,
                                          const at::Tensor& targets, const AttentionSpec& spec, int64_t trained) {
  auto in = unit_inputs(positions, model->embed_tokens->weight.scalar_type(), spec);
  in.targets = targets;
  in.trained = trained;
  return run_units(tokens, in);
}

at::Tensor LlamaForCausalLMImpl::logits(const at::Tensor& hidden) { return at::matmul(hidden, head_weight().t()); }

void LlamaForCausalLMImpl::reset_parameters(uint64_t seed) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : named_parameters()) {
    auto& t = p.value();
    if (t.dim() == 1) {
      // Biases start at zero and RMSNorm weights at one, as HF's _init_weights does.
      t.fill_(p.key().size() >= 5 && p.key().compare(p.key().size() - 5, 5, ".bias") == 0 ? 0.0 : 1.0);
    } else {
      // Draw in fp32 on CPU from our own generator: the same seed gives the same model on any
      // device and dtype.
      t.copy_(at::normal(0.0, config_.initializer_range, t.sizes(), gen, at::kFloat));
    }
  }
}

LlamaForCausalLM make_llama(const LlamaConfig& c, uint64_t seed, const at::Device& device) {
  c.validate("model config");
  LlamaForCausalLM m(c);
  m->reset_parameters(seed);
  m->to(device, c.dtype);
  return m;
}

LlamaForCausalLM grow_vocab(LlamaForCausalLM& model, int64_t new_vocab) {
  LlamaConfig c = model->config();
  if (new_vocab < c.vocab_size)
    fail("cannot shrink the vocabulary from {} to {} tokens", c.vocab_size, new_vocab);
  if (new_vocab == c.vocab_size) return model;
  const int64_t old_vocab = c.vocab_size;
  c.vocab_size = new_vocab;
  LlamaForCausalLM grown(c);
  at::NoGradGuard no_grad;
  auto old_params = model->named_parameters();
  for (auto& item : grown->named_parameters()) {
    const auto& src = old_params[item.key()];
    auto& dst = item.value();
    dst.set_data(dst.to(src.device(), src.scalar_type()));
    if (src.sizes() == dst.sizes()) {
      dst.copy_(src);
    } else {  // embedding or head: [vocab, hidden]
      dst.narrow(0, 0, old_vocab).copy_(src);
      dst.narrow(0, old_vocab, new_vocab - old_vocab).copy_(src.mean(0, /*keepdim=*/true).expand({new_vocab - old_vocab, -1}));
    }
  }
  grown->recompute = model->recompute;
  return grown;
}

at::Tensor default_positions(int64_t batch, int64_t length, int64_t past_length,
                             const at::Device& device) {
  auto pos = at::arange(past_length, past_length + length, at::TensorOptions().dtype(at::kLong).device(device));
  return pos.unsqueeze(0).expand({batch, length});
}

DocumentSpans document_spans(const at::Tensor& doc_ids) {
  if (doc_ids.dim() != 2 || !doc_ids.device().is_cpu())
    fail("document_spans wants host document ids [B, T], got {} dims on {}", doc_ids.dim(), doc_ids.device().str());
  auto ids = doc_ids.to(at::kLong).contiguous();
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t* d = ids.data_ptr<int64_t>();
  std::vector<int32_t> cu{0};
  int64_t longest = 0;
  for (int64_t r = 0; r < B; ++r)
    for (int64_t t = 1; t <= T; ++t)
      if (t == T || d[r * T + t] != d[r * T + t - 1]) {  // a document ends here (or the row does)
        const int64_t end = r * T + t;
        longest = std::max<int64_t>(longest, end - cu.back());
        cu.push_back(static_cast<int32_t>(end));
      }
  return {at::tensor(cu, at::kInt), longest};
}

bool varlen_attention_runs(const c10::Device& device, c10::ScalarType dtype) {
  return device.is_cuda() && (dtype == at::kBFloat16 || dtype == at::kHalf);
}

AttentionSpec attention_spec(const at::Tensor& doc_ids, const c10::Device& device, c10::ScalarType dtype) {
  AttentionSpec spec;
  if (!doc_ids.defined()) return spec;
  if (varlen_attention_runs(device, dtype)) {
    auto spans = document_spans(doc_ids);
    spec.cu_seqlens = spans.cu_seqlens.to(device, /*non_blocking=*/true);
    spec.max_seqlen = spans.max_seqlen;
  } else {
    spec.mask = document_causal_mask(doc_ids.to(device, /*non_blocking=*/true));
  }
  return spec;
}

at::Tensor document_causal_mask(const at::Tensor& doc_ids) {
  int64_t T = doc_ids.size(1);
  auto same_doc = doc_ids.unsqueeze(2) == doc_ids.unsqueeze(1);  // [B, T, T]
  auto causal = at::ones({T, T}, doc_ids.options().dtype(at::kBool)).tril();
  return (same_doc & causal).unsqueeze(1);
}

}  // namespace agenttune
