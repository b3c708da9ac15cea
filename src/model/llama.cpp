#include "agenttune/model/llama.h"
#include "agenttune/util/error.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/container/modulelist.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "agenttune/model/activation_checkpoint.h"

namespace agenttune {

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, const ParamOptions& params) {
  weight = register_parameter("weight", at::empty({out, in}, params));
}

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab, int64_t dim, const ParamOptions& params) {
  weight = register_parameter("weight", at::empty({vocab, dim}, params));
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, const ParamOptions& params) : eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}, params));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  // Normalise in fp32 and cast back before the weight, exactly as HF does: bf16 runs then round
  // the same way and parity holds beyond fp32.
  auto h = x.to(at::kFloat);
  auto var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(var + eps_);
  return weight * h.to(x.scalar_type());
}

AttentionImpl::AttentionImpl(const LlamaConfig& c, const ParamOptions& params)
    : n_heads_(c.num_attention_heads),
      n_kv_heads_(c.num_key_value_heads),
      head_dim_(c.resolved_head_dim()) {
  q_proj = register_module("q_proj", Projection(c.hidden_size, n_heads_ * head_dim_, params));
  k_proj = register_module("k_proj", Projection(c.hidden_size, n_kv_heads_ * head_dim_, params));
  v_proj = register_module("v_proj", Projection(c.hidden_size, n_kv_heads_ * head_dim_, params));
  o_proj = register_module("o_proj", Projection(n_heads_ * head_dim_, c.hidden_size, params));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const RopeTables& rope,
                                  const AttentionSpec& spec, LayerCache* cache) {
  int64_t B = x.size(0), T = x.size(1);
  auto q = q_proj(x).view({B, T, n_heads_, head_dim_}).transpose(1, 2);
  auto k = k_proj(x).view({B, T, n_kv_heads_, head_dim_}).transpose(1, 2);
  auto v = v_proj(x).view({B, T, n_kv_heads_, head_dim_}).transpose(1, 2);
  q = apply_rope(q, rope);
  k = apply_rope(k, rope);

  int64_t past = cache ? cache->length : 0;
  if (cache) std::tie(k, v) = cache->append(k, v);

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

at::Tensor MLPImpl::forward(const at::Tensor& x) {
  return down_proj(at::silu(gate_proj(x)) * up_proj(x));
}

DecoderLayerImpl::DecoderLayerImpl(const LlamaConfig& c, const ParamOptions& params) {
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, params));
  self_attn = register_module("self_attn", Attention(c, params));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, params));
  mlp = register_module("mlp", MLP(c, params));
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& x, const RopeTables& rope,
                                     const AttentionSpec& spec, LayerCache* cache) {
  auto h = x + self_attn(input_layernorm(x), rope, spec, cache);
  return h + mlp(post_attention_layernorm(h));
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

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c, const ParamOptions& params)
    : config_(c), rope_(c) {
  model = register_module("model", LlamaModel(c, params));
  if (!c.tie_word_embeddings)
    lm_head = register_module("lm_head", Projection(c.hidden_size, c.vocab_size, params));
}

at::Tensor LlamaForCausalLMImpl::hidden_states(const at::Tensor& tokens, const at::Tensor& positions,
                                               const AttentionSpec& spec, KVCache* cache) {
  auto h = model->embed_tokens(tokens);
  auto rope = rope_.tables(positions, h.scalar_type());
  const bool recompute = activation_checkpointing && !cache && at::GradMode::is_enabled();
  for (size_t i = 0; i < model->layers.size(); ++i)
    h = recompute ? checkpointed_layer(model->layers[i], h, rope, spec)
                  : model->layers[i](h, rope, spec, cache ? &cache->layers[i] : nullptr);
  return model->norm(h);
}

at::Tensor LlamaForCausalLMImpl::logits(const at::Tensor& hidden) {
  if (lm_head) return lm_head(hidden);
  return at::matmul(hidden, model->embed_tokens->weight.t());
}

void LlamaForCausalLMImpl::reset_parameters(uint64_t seed) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : named_parameters()) {
    auto& t = p.value();
    if (t.dim() == 1) {
      t.fill_(1.0);  // RMSNorm weights
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
  grown->activation_checkpointing = model->activation_checkpointing;
  return grown;
}

at::Tensor default_positions(int64_t batch, int64_t length, int64_t past_length,
                             const at::Device& device) {
  auto pos = at::arange(past_length, past_length + length, at::TensorOptions().dtype(at::kLong).device(device));
  return pos.unsqueeze(0).expand({batch, length});
}

at::Tensor document_causal_mask(const at::Tensor& doc_ids) {
  int64_t T = doc_ids.size(1);
  auto same_doc = doc_ids.unsqueeze(2) == doc_ids.unsqueeze(1);  // [B, T, T]
  auto causal = at::ones({T, T}, doc_ids.options().dtype(at::kBool)).tril();
  return (same_doc & causal).unsqueeze(1);
}

}  // namespace agenttune
