#include "agenttune/model/generation.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>

#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune {

int64_t sample_token(const at::Tensor& logits, const SamplingOptions& opts, at::Generator& gen) {
  if (opts.temperature <= 0.0) return logits.argmax().item<int64_t>();
  auto probs = at::softmax(logits.to(at::kFloat) / opts.temperature, -1);
  if (opts.top_p < 1.0) {
    // Keep the smallest prefix of the sorted distribution whose mass reaches top_p (always at
    // least the most likely token), renormalise, sample.
    auto [sorted, idx] = probs.sort(-1, /*descending=*/true);
    auto cum = sorted.cumsum(-1);
    auto drop = (cum - sorted) >= opts.top_p;
    sorted = sorted.masked_fill(drop, 0.0);
    auto choice = at::multinomial(sorted / sorted.sum(), 1, false, gen);
    return idx.index({choice}).item<int64_t>();
  }
  return at::multinomial(probs, 1, false, gen).item<int64_t>();
}

void warn_past_positions(const LlamaConfig& cfg, int64_t prompt, int64_t max_new_tokens, std::string_view who) {
  // A warning, not a refusal, as in transformers, whose generate() runs a Llama past
  // max_position_embeddings: RoPE has no table to run off, positions beyond training only
  // extrapolate, and someone probing length generalisation wants the tokens.
  const int64_t total = prompt + max_new_tokens;
  if (total <= cfg.max_positions()) return;
  const std::string limit =
      cfg.linear_rope_scaled()
          ? fmt::format("{} (max_position_embeddings {} x rope scaling factor {})", cfg.max_positions(),
                        cfg.max_position_embeddings, cfg.rope_scaling_factor)
          : fmt::format("{} (max_position_embeddings)", cfg.max_positions());
  log::warn("{}: prompt {} + max_new_tokens {} = {} positions exceed the model's {}; past them the output may degrade",
            who, prompt, max_new_tokens, total, limit);
}

GenerationResult generate(LlamaForCausalLM& model, const std::vector<int64_t>& prompt,
                          const SamplingOptions& opts, const std::function<void(int64_t)>& on_token) {
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  const auto& cfg = model->config();
  auto device = model->parameters().front().device();
  // Checked here, on the host: on the device an id past the embedding is LibTorch's bare "index
  // out of range in self" (or a CUDA assert), which names neither the id nor the vocabulary.
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= cfg.vocab_size)
      fail("generate: prompt token {} (id {}) is outside the model's vocabulary of {} tokens (ids 0..{})", i,
           prompt[i], cfg.vocab_size, cfg.vocab_size - 1);
  const int64_t total = static_cast<int64_t>(prompt.size()) + opts.max_new_tokens;
  warn_past_positions(cfg, static_cast<int64_t>(prompt.size()), opts.max_new_tokens, "generate");

  torch::NoGradGuard no_grad;
  KVCache cache(cfg, 1, total, cfg.dtype, device);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
  GenerationResult res;

  auto clock = std::chrono::steady_clock::now;
  auto t0 = clock();
  auto input = at::tensor(prompt, at::kLong).to(device).unsqueeze(0);
  auto positions = default_positions(1, input.size(1), 0, device);
  for (int64_t step = 0; step < opts.max_new_tokens; ++step) {
    auto logits = model->forward(input, positions, {}, &cache);
    auto last = logits.select(1, logits.size(1) - 1).squeeze(0).to(at::kFloat).cpu();
    int64_t tok = sample_token(last, opts, gen);
    if (step == 0) res.prefill_seconds = std::chrono::duration<double>(clock() - t0).count();
    res.tokens.push_back(tok);
    if (on_token) on_token(tok);
    if (std::find(opts.stop_ids.begin(), opts.stop_ids.end(), tok) != opts.stop_ids.end()) {
      res.stopped = true;
      break;
    }
    input = at::full({1, 1}, tok, at::TensorOptions().dtype(at::kLong).device(device));
    positions = default_positions(1, 1, cache.length(), device);
  }
  res.decode_seconds = std::chrono::duration<double>(clock() - t0).count() - res.prefill_seconds;
  return res;
}

}  // namespace agenttune
