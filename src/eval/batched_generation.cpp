#include "agenttune/eval/batched_generation.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <numeric>

#include "agenttune/model/generation.h"
#include "agenttune/util/error.h"

namespace agenttune::eval {

namespace {

// One batch of prompts being decoded: the rows still running, their cache, and where each
// row's output goes. Rows that stop leave the batch (and the cache) at once.
class BatchDecoder {
 public:
  BatchDecoder(EvalModel& model, const std::vector<std::vector<int64_t>>& prompts, std::vector<size_t> slots,
               const BatchGenerationOptions& opts, BatchGenerationResult& res)
      : model_(model), opts_(opts), res_(res), slots_(std::move(slots)) {
    if (slots_.empty()) return;
    std::vector<std::vector<int64_t>> rows;
    for (size_t s : slots_) rows.push_back(prompts[s]);
    const PaddedBatch b = pad_batch(rows, /*left=*/true);
    const int64_t B = b.tokens.size(0), P = b.tokens.size(1);
    padded_ = std::any_of(b.lengths.begin(), b.lengths.end(), [P](int64_t n) { return n != P; });
    cache_ = std::make_unique<KVCache>(model.make_cache(B, P + opts.max_new_tokens));
    const auto dev = model.device();
    if (padded_) keys_ = upload(at::cat({b.key_mask, at::ones({B, opts.max_new_tokens}, at::kBool)}, 1), dev);
    // Every row's last prompt token sits at P - 1 (left padding): only those reach the head.
    head_rows_ = upload(at::arange(B, at::kLong) * P + (P - 1), dev);
    tokens_ = upload(b.tokens, dev);
    positions_ = upload(b.positions, dev);
    next_positions_ = upload(at::tensor(b.lengths, at::kLong).unsqueeze(1), dev);
  }

  bool running() const { return !slots_.empty(); }

  // One forward: the prefill, then one token per running row. Reads the new tokens (the step's
  // one host sync), files them, and drops the rows that ended.
  void step() {
    const bool prefill = cache_->length() == 0;
    const int64_t past = cache_->length(), T = tokens_.size(1);
    AttentionSpec spec;
    if (padded_ && prefill) spec = padded_attention(keys_, 0, T, model_.device());
    // A decoding step's one query is a real token: it sees the real keys so far, a view of `keys_`.
    if (padded_ && !prefill) spec.mask = keys_.narrow(1, 0, past + T).unsqueeze(1).unsqueeze(1);
    auto logits = model_.logits(tokens_, positions_, spec, cache_.get(), prefill ? head_rows_ : at::Tensor());
    auto next = logits.reshape({-1, logits.size(-1)}).argmax(-1);  // [B]
    const auto host = next.cpu();
    const int64_t* tok = host.data_ptr<int64_t>();
    std::vector<int64_t> keep;
    for (size_t r = 0; r < slots_.size(); ++r) {
      auto& out = res_.tokens[slots_[r]];
      out.push_back(tok[r]);
      const bool stop = std::find(opts_.stop_ids.begin(), opts_.stop_ids.end(), tok[r]) != opts_.stop_ids.end();
      res_.stopped[slots_[r]] = stop;
      if (!stop && static_cast<int64_t>(out.size()) < opts_.max_new_tokens) keep.push_back(static_cast<int64_t>(r));
    }
    tokens_ = next.unsqueeze(1);
    positions_ = prefill ? next_positions_ : positions_ + 1;
    if (keep.size() < slots_.size()) drop_rows(keep);
  }

 private:
  void drop_rows(const std::vector<int64_t>& keep) {
    std::vector<size_t> slots;
    for (int64_t r : keep) slots.push_back(slots_[static_cast<size_t>(r)]);
    slots_ = std::move(slots);
    if (slots_.empty()) return;
    const auto idx = upload(at::tensor(keep, at::kLong), model_.device());
    for (auto& l : cache_->layers) {
      l.k = l.k.index_select(0, idx);
      l.v = l.v.index_select(0, idx);
    }
    if (padded_) keys_ = keys_.index_select(0, idx);
    tokens_ = tokens_.index_select(0, idx);
    positions_ = positions_.index_select(0, idx);
  }

  EvalModel& model_;
  const BatchGenerationOptions& opts_;
  BatchGenerationResult& res_;
  std::vector<size_t> slots_;  // the prompt (result) index of each running row
  std::unique_ptr<KVCache> cache_;
  bool padded_ = false;  // prompts of different lengths: pad keys masked (else plain causal)
  at::Tensor keys_;      // bool [B, P + max_new_tokens] on the device: real keys
  at::Tensor head_rows_, tokens_, positions_, next_positions_;
};

void check_prompts(const std::vector<std::vector<int64_t>>& prompts, const LlamaConfig& cfg) {
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) fail("generate_batch: prompt {} has no tokens", i);
    for (size_t t = 0; t < prompts[i].size(); ++t)
      if (prompts[i][t] < 0 || prompts[i][t] >= cfg.vocab_size)
        fail("generate_batch: prompt {} token {} (id {}) is outside the model's vocabulary of {} tokens", i, t,
             prompts[i][t], cfg.vocab_size);
  }
}

// A forward that keeps a rank in step with the others when it has no rows left: one token, no cache.
void idle_forward(EvalModel& model) {
  auto one = at::zeros({1, 1}, at::kLong);
  (void)model.logits(one, one, {}, nullptr, at::zeros({1}, at::kLong));
}

}  // namespace

BatchGenerationResult generate_batch(EvalModel& model, const std::vector<std::vector<int64_t>>& prompts,
                                     const BatchGenerationOptions& opts) {
  if (opts.batch_size < 1) fail("generate_batch: batch_size is {}; it must be at least 1", opts.batch_size);
  if (opts.max_new_tokens < 0) fail("generate_batch: max_new_tokens is {}; it must be >= 0", opts.max_new_tokens);
  check_prompts(prompts, model.config());
  if (!prompts.empty()) {
    const auto longest = std::max_element(prompts.begin(), prompts.end(),
                                          [](const auto& a, const auto& b) { return a.size() < b.size(); });
    warn_past_positions(model.config(), static_cast<int64_t>(longest->size()), opts.max_new_tokens, "generate_batch");
  }
  torch::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  BatchGenerationResult res;
  res.tokens.resize(prompts.size());
  res.stopped.assign(prompts.size(), false);
  // Longest first: prompts of like length share a batch, so little of it is padding.
  std::vector<size_t> order(prompts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return prompts[a].size() > prompts[b].size(); });
  const auto bs = static_cast<size_t>(opts.batch_size);
  const int64_t mine = static_cast<int64_t>((prompts.size() + bs - 1) / bs);
  const int64_t batches = opts.max_new_tokens == 0 ? 0 : model.max_over_ranks(mine);
  for (int64_t i = 0; i < batches; ++i) {
    const size_t from = std::min(prompts.size(), static_cast<size_t>(i) * bs);
    const size_t to = std::min(prompts.size(), from + bs);
    BatchDecoder batch(model, prompts, std::vector<size_t>(order.begin() + from, order.begin() + to), opts, res);
    // Every rank runs the prefill and then as many steps as the longest-running rank needs.
    do {
      if (batch.running())
        batch.step();
      else
        idle_forward(model);
      ++res.steps;
    } while (model.max_over_ranks(batch.running() ? 1 : 0) > 0);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace agenttune::eval
