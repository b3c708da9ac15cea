#pragma once
// One optimizer step of the sharded model: the function train(), the tests and bench/train_step
// all call, so what is measured is what trains. The data loader, checkpoints and metrics stay in
// the trainer; this is the model's work and the step's one host sync.
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "agenttune/config/scalars.h"
#include "agenttune/data/mixture.h"
#include "agenttune/data/packed_batch.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/optimizer.h"

namespace agenttune {

// Whether a step's update was applied. Every rank judges the same reduced numbers, so every rank
// reaches the same verdict.
enum class StepVerdict { Applied, NonFinite, LossSpike };

template <>
struct EnumNames<StepVerdict> {
  static constexpr std::array<std::pair<StepVerdict, std::string_view>, 3> values = {
      {{StepVerdict::Applied, "applied"},
       {StepVerdict::NonFinite, "non_finite"},
       {StepVerdict::LossSpike, "loss_spike"}}};
};

struct StepJudgement {
  StepVerdict verdict = StepVerdict::Applied;
  std::string reason;  // for the log: the numbers that made the verdict; empty when applied
  bool applied() const { return verdict == StepVerdict::Applied; }
};

struct StepOutcome {
  at::Tensor loss_sum;  // summed token loss of the micro-batches, all ranks (fp64, on the device)
  // trained, real and slots summed over the ranks (fp64, on the device); the fields below hold
  // them once fetched (before that, this rank's own).
  at::Tensor counts;
  double loss = 0;      // the step's token mean over all ranks, once fetched
  double grad_norm = 0;
  int64_t trained = 0;
  int64_t real = 0;   // tokens that are not padding, all ranks
  int64_t slots = 0;  // token positions computed (padded micro-batches are cut to their longest row)
  bool stop_vote = false;   // some rank asked to stop (a signal): every rank sees the same
  StepJudgement judgement;  // whether the update was applied, and if not, why
};

// Seconds per phase, filled only when asked (StepRequest::phase_times): each phase ends with a
// drain of the device so the clock sees finished work, which costs the overlap of a real step.
struct StepPhaseTimes {
  double forward = 0, backward = 0, reduce = 0, optimizer = 0;
};

struct StepRequest {
  AttentionMode attention = AttentionMode::Causal;
  double clip_grad_norm = 1.0;  // <= 0: no clipping
  double lr = 0;
  bool stop_requested = false;  // this rank's vote
  // Whether the update may be applied, from the fetched loss and grad norm. Without one, a
  // non-finite loss or grad norm skips the update (judge_finite).
  std::function<StepJudgement(const StepOutcome&)> judge;
  StepPhaseTimes* phase_times = nullptr;
};

// Applied when the fetched loss and grad norm are finite, else NonFinite with the numbers: what
// train_step judges by when the request has no judge of its own.
StepJudgement judge_finite(const StepOutcome& o);

// One micro-batch's summed token loss, on the device: training and evaluation share it. Only
// token ids, positions and targets travel to the device; a document mask is built there.
at::Tensor micro_batch_loss(parallel::ShardedModel& model, const PackedBatch& b, AttentionMode attention,
                            c10::Device dev);

// Forward and backward over the micro-batches, the gradient of the step's token mean whatever the
// micro-batching and world size; then the grads are reduced (finish_backward). No host sync: the
// token counts are summed over the ranks on the device and stay there (StepOutcome::counts).
StepOutcome forward_backward(parallel::ShardedModel& model, const std::vector<PackedBatch>& batches,
                             AttentionMode attention, parallel::ProcessGroup& dist, StepPhaseTimes* times = nullptr);

// The whole step: forward_backward, the stop vote, clipping, one host sync for loss, grad norm,
// vote and token counts, then (when judged good) the AdamW update and the re-gather of resident parameters.
// Grads are dropped either way.
StepOutcome train_step(parallel::ShardedModel& model, AdamW& opt, const std::vector<PackedBatch>& batches,
                       const StepRequest& req, parallel::ProcessGroup& dist);

// Every rank evaluates the same held-out batches; NaN when there are none.
double validation_loss(parallel::ShardedModel& model, const std::vector<PackedBatch>& batches,
                       AttentionMode attention, c10::Device dev);

}  // namespace agenttune
