#pragma once
// What eval runs on: a plain LlamaForCausalLM (`agenttune eval`), or the sharding engine's model
// during training (in-loop eval on the current weights). Eval code sees only this interface.
//
// Collective: on a sharded model every method that runs the model (logits, loss_sum,
// target_logprobs) and every *_over_ranks reduction is a collective, so every rank calls them in
// the same order and the same number of times (batch shapes may differ between ranks: each rank
// runs its own share). Code that loops over a rank's own share first agrees the loop's length
// (max_over_ranks) and lets a rank with nothing left run a one-token batch. A plain model is a
// world of one: the reductions return their argument.
//
// Calls run without autograd and with adapter dropout off (torch's model.eval()); a sharded model
// is back in training mode when its EvalModel is destroyed.
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "agenttune/model/kv_cache.h"
#include "agenttune/model/llama.h"

namespace agenttune::parallel {
class ShardedModel;
class ProcessGroup;
}  // namespace agenttune::parallel

namespace agenttune::eval {

class EvalModel {
 public:
  virtual ~EvalModel() = default;
  virtual const LlamaConfig& config() const = 0;
  virtual c10::Device device() const = 0;
  virtual c10::ScalarType dtype() const = 0;  // the activations' (and a KV cache's) dtype
  // This rank and how many share the eval work (0 and 1 for a plain model).
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // tokens, positions: [B, T] int64 (host or device; moved to device()). `spec`: what attention may
  // see; a padded batch passes padded_attention()'s mask (right padding needs none: causal
  // attention never reaches the pads after a row's tokens). `cache`: appended to when given
  // (make_cache). `head_rows`: host int64 [N], flat indices into the B*T positions; only those reach
  // the head, so the result is [N, V] instead of [B, T, V]. Logits in dtype(), on device().
  virtual at::Tensor logits(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                            KVCache* cache = nullptr, const at::Tensor& head_rows = {}) = 0;
  // Summed next-token cross-entropy (fp32 device scalar) of targets [B, T] (kIgnoreIndex = not
  // counted) without the logits; `trained` = the count of counted targets when the host knows it.
  virtual at::Tensor loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                              const at::Tensor& targets, int64_t trained = -1) = 0;

  // Reductions over the ranks sharing the work (collective on a sharded model).
  virtual int64_t max_over_ranks(int64_t value) = 0;
  // Sums `t` (on device()) in place over the ranks.
  virtual void sum_over_ranks(at::Tensor& t) = 0;

  // A KV cache for `batch` rows of up to `max_len` positions, in dtype() on device().
  KVCache make_cache(int64_t batch, int64_t max_len) const;
};

// Over a plain model (any device, any dtype: the model's parameters say which).
std::unique_ptr<EvalModel> plain_eval_model(LlamaForCausalLM model);
// Over the sharding engine's model, computing in its compute dtype on `dist`'s device; `dist` is the
// group the engine shards over. Puts the model in eval mode until the EvalModel is destroyed.
std::unique_ptr<EvalModel> sharded_eval_model(parallel::ShardedModel& model, parallel::ProcessGroup& dist);

// `t` on `device` without the host waiting for the device (a host tensor's bytes are staged): how
// eval uploads its host-built batches, masks and indices.
at::Tensor upload(const at::Tensor& t, const c10::Device& device);

// Token sequences laid out as one [B, T] batch (T = the longest), on the host.
struct PaddedBatch {
  at::Tensor tokens;     // int64 [B, T]; pads hold `pad_id`
  at::Tensor positions;  // int64 [B, T]; each row's tokens at 0, 1, ...; pads at 0
  at::Tensor key_mask;   // bool [B, T]; true = a real token
  std::vector<int64_t> lengths;
  bool left = false;  // pads before the tokens (decoding) or after them (scoring)
};
// An empty sequence is an error naming its index.
PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& seqs, bool left, int64_t pad_id = 0);

// The attention mask [B, 1, T, past + T] (bool, on `device`) for T new queries after `past` cached
// positions of a batch whose real keys are `key_mask` [B, >= past + T] (host or device): causal,
// never a pad key, and a pad query sees itself (a row with no key would be NaN, and NaN keys and
// values in the cache would reach real rows through a zero attention weight).
AttentionSpec padded_attention(const at::Tensor& key_mask, int64_t past, int64_t T, const c10::Device& device);

// log p(targets[b, t] | tokens[b, ..t]) for every position whose target is not kIgnoreIndex, in fp32
// (computed from the model-dtype logits upcast, as lm-evaluation-harness's log_softmax), 0 elsewhere:
// host [B, T]. Only the targeted positions reach the head, so a large vocabulary never becomes
// [B, T, V]. `greedy` (optional, host bool [B, T]): whether each target is the argmax.
// tokens/positions/spec as in EvalModel::logits (collective).
at::Tensor target_logprobs(EvalModel& model, const at::Tensor& tokens, const at::Tensor& positions,
                           const AttentionSpec& spec, const at::Tensor& targets, at::Tensor* greedy = nullptr);

}  // namespace agenttune::eval
