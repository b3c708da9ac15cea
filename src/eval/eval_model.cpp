#include "agenttune/eval/eval_model.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "agenttune/model/loss.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/util/error.h"

namespace agenttune::eval {

KVCache EvalModel::make_cache(int64_t batch, int64_t max_len) const {
  return KVCache(config(), batch, max_len, dtype(), device());
}

namespace {

// Logits upcast to fp32 at once by target_logprobs: 64M elements (256 MiB).
constexpr int64_t kLogitBlockElements = int64_t{1} << 26;

// Adapter dropout off (torch's model.eval()) while eval holds the model, the previous mode back after.
class EvalMode {
 public:
  explicit EvalMode(LlamaForCausalLM model) : model_(std::move(model)), was_training_(model_->is_training()) {
    model_->eval();
  }
  ~EvalMode() {
    if (was_training_) model_->train();
  }
  EvalMode(const EvalMode&) = delete;
  EvalMode& operator=(const EvalMode&) = delete;

 private:
  LlamaForCausalLM model_;
  bool was_training_;
};

class PlainEvalModel final : public EvalModel {
 public:
  explicit PlainEvalModel(LlamaForCausalLM model)
      : model_(std::move(model)),
        mode_(model_),
        device_(model_->head_weight().device()),
        dtype_(model_->model->embed_tokens->weight.scalar_type()) {}

  const LlamaConfig& config() const override { return model_->config(); }
  c10::Device device() const override { return device_; }
  c10::ScalarType dtype() const override { return dtype_; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }

  at::Tensor logits(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec, KVCache* cache,
                    const at::Tensor& head_rows) override {
    torch::NoGradGuard no_grad;
    auto in = model_->unit_inputs(upload(positions, device_), dtype_, spec, cache);
    if (head_rows.defined()) in.head_rows = upload(head_rows, device_);
    return model_->run_units(upload(tokens, device_), in);
  }
  at::Tensor loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                      const at::Tensor& targets, int64_t trained) override {
    torch::NoGradGuard no_grad;
    return model_->loss_sum(upload(tokens, device_), upload(positions, device_), upload(targets, device_), spec, trained);
  }
  int64_t max_over_ranks(int64_t value) override { return value; }
  void sum_over_ranks(at::Tensor&) override {}

 private:
  LlamaForCausalLM model_;
  EvalMode mode_;
  c10::Device device_;
  c10::ScalarType dtype_;
};

class ShardedEvalModel final : public EvalModel {
 public:
  ShardedEvalModel(parallel::ShardedModel& model, parallel::ProcessGroup& dist)
      : model_(model), dist_(dist), mode_(model.model()) {}

  const LlamaConfig& config() const override { return model_.model()->config(); }
  c10::Device device() const override { return dist_.device(); }
  c10::ScalarType dtype() const override { return model_.compute_dtype(); }
  int rank() const override { return dist_.rank(); }
  int world_size() const override { return dist_.world_size(); }

  at::Tensor logits(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec, KVCache* cache,
                    const at::Tensor& head_rows) override {
    torch::NoGradGuard no_grad;
    const auto dev = device();
    return model_.logits(upload(tokens, dev), upload(positions, dev), spec, cache,
                         head_rows.defined() ? upload(head_rows, dev) : head_rows);
  }
  at::Tensor loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                      const at::Tensor& targets, int64_t trained) override {
    torch::NoGradGuard no_grad;
    const auto dev = device();
    return model_.loss_sum(upload(tokens, dev), upload(positions, dev), spec, upload(targets, dev), trained);
  }
  int64_t max_over_ranks(int64_t value) override {
    if (dist_.world_size() == 1) return value;
    // Counts far below 2^53: exact in a double.
    return static_cast<int64_t>(dist_.all_reduce(static_cast<double>(value), parallel::Reduce::Max, "eval loop length"));
  }
  void sum_over_ranks(at::Tensor& t) override {
    if (dist_.world_size() > 1) dist_.all_reduce(t, parallel::Reduce::Sum, "eval sums");
  }

 private:
  parallel::ShardedModel& model_;
  parallel::ProcessGroup& dist_;
  EvalMode mode_;
};

}  // namespace

std::unique_ptr<EvalModel> plain_eval_model(LlamaForCausalLM model) {
  return std::make_unique<PlainEvalModel>(std::move(model));
}

std::unique_ptr<EvalModel> sharded_eval_model(parallel::ShardedModel& model, parallel::ProcessGroup& dist) {
  return std::make_unique<ShardedEvalModel>(model, dist);
}

at::Tensor upload(const at::Tensor& t, const c10::Device& device) {
  return t.to(t.options().device(device), /*non_blocking=*/true);
}

PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& seqs, bool left, int64_t pad_id) {
  if (seqs.empty()) fail("pad_batch: no sequences to lay out");
  PaddedBatch b;
  b.left = left;
  int64_t T = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i].empty()) fail("pad_batch: sequence {} of {} has no tokens", i, seqs.size());
    b.lengths.push_back(static_cast<int64_t>(seqs[i].size()));
    T = std::max(T, b.lengths.back());
  }
  const auto B = static_cast<int64_t>(seqs.size());
  b.tokens = at::full({B, T}, pad_id, at::kLong);
  b.positions = at::zeros({B, T}, at::kLong);
  b.key_mask = at::zeros({B, T}, at::kBool);
  auto tok = b.tokens.accessor<int64_t, 2>();
  auto pos = b.positions.accessor<int64_t, 2>();
  auto key = b.key_mask.accessor<bool, 2>();
  for (int64_t r = 0; r < B; ++r) {
    const int64_t start = left ? T - b.lengths[r] : 0;
    for (int64_t t = 0; t < b.lengths[r]; ++t) {
      tok[r][start + t] = seqs[r][t];
      pos[r][start + t] = t;
      key[r][start + t] = true;
    }
  }
  return b;
}

AttentionSpec padded_attention(const at::Tensor& key_mask, int64_t past, int64_t T, const c10::Device& device) {
  const int64_t S = past + T;
  if (key_mask.dim() != 2 || key_mask.size(1) < S)
    fail("padded_attention: the key mask [{}] covers fewer than the {} cached and new positions",
         fmt::join(key_mask.sizes().vec(), ", "), S);
  auto keys = upload(key_mask.narrow(1, 0, S).to(at::kBool), device);
  auto index = at::TensorOptions().dtype(at::kLong).device(device);
  auto q = at::arange(past, S, index).unsqueeze(1);
  auto k = at::arange(S, index).unsqueeze(0);
  auto mask = ((k <= q).unsqueeze(0) & keys.unsqueeze(1)) | (k == q).unsqueeze(0);  // [B, T, S]
  AttentionSpec spec;
  spec.mask = mask.unsqueeze(1);
  return spec;
}

at::Tensor target_logprobs(EvalModel& model, const at::Tensor& tokens, const at::Tensor& positions,
                           const AttentionSpec& spec, const at::Tensor& targets, at::Tensor* greedy) {
  if (targets.sizes() != tokens.sizes())
    fail("target_logprobs: targets [{}] and tokens [{}] differ in shape", fmt::join(targets.sizes().vec(), ", "),
         fmt::join(tokens.sizes().vec(), ", "));
  const auto host = targets.to(at::kCPU, at::kLong).contiguous();
  const auto flat = host.reshape({-1});
  // Chosen on the host (the targets are there), so selecting them needs no device sync.
  const auto rows = at::nonzero(flat != kIgnoreIndex).reshape({-1});
  const auto logits = model.logits(tokens, positions, spec, nullptr, rows);  // [N, V]
  const auto want = upload(flat.index_select(0, rows), model.device());
  // fp32 log-softmax a block of rows at a time: all N rows at once would be two more [N, V] fp32
  // copies of the logits, gigabytes for a batch of held-out records at a 128K-152K vocabulary.
  const int64_t n = logits.size(0);
  const int64_t block = std::max<int64_t>(1, kLogitBlockElements / std::max<int64_t>(1, logits.size(1)));
  auto picked = at::empty({2, n}, logits.options().dtype(at::kFloat));  // log p, is-argmax
  for (int64_t at_row = 0; at_row < n; at_row += block) {
    const int64_t len = std::min(block, n - at_row);
    const auto lp = at::log_softmax(logits.narrow(0, at_row, len).to(at::kFloat), -1);
    const auto w = want.narrow(0, at_row, len);
    picked[0].narrow(0, at_row, len).copy_(lp.gather(1, w.unsqueeze(1)).squeeze(1));
    picked[1].narrow(0, at_row, len).copy_(lp.argmax(-1) == w);
  }
  const auto host_picked = picked.cpu();  // the one host sync
  auto out = at::zeros(host.sizes(), at::kFloat);
  out.view({-1}).index_put_({rows}, host_picked[0]);
  if (greedy) {
    *greedy = at::zeros(host.sizes(), at::kBool);
    greedy->view({-1}).index_put_({rows}, host_picked[1] != 0);
  }
  return out;
}

}  // namespace agenttune::eval
