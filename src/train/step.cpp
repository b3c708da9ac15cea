#include "agenttune/train/step.h"

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cmath>

#include "agenttune/model/loss.h"
#include "agenttune/util/error.h"

namespace agenttune {

namespace {

using Clock = std::chrono::steady_clock;

// Ends a timed phase: collectives drained and the device idle, so the clock sees finished work.
double phase_end(Clock::time_point& start, parallel::ProcessGroup& dist) {
  dist.drain();
  const auto dev = dist.device();
  if (dev.type() != c10::DeviceType::CPU)
    c10::impl::getDeviceGuardImpl(dev.type())->synchronizeDevice(dev.index());
  const auto now = Clock::now();
  const double s = std::chrono::duration<double>(now - start).count();
  start = now;
  return s;
}

// Loss, grad norm, stop vote and the step's token counts come back to the host together: the
// step's one sync.
void fetch_step_scalars(StepOutcome& o, const at::Tensor& grad_norm, const at::Tensor& stop_vote, parallel::ProcessGroup& dist) {
  dist.drain();
  auto host = at::cat({o.loss_sum.reshape({1}), grad_norm.to(at::kDouble).reshape({1}),
                       stop_vote.to(at::kDouble).reshape({1}), o.counts})
                  .cpu();
  const double* v = host.data_ptr<double>();
  o.trained = static_cast<int64_t>(v[3]), o.real = static_cast<int64_t>(v[4]), o.slots = static_cast<int64_t>(v[5]);
  o.loss = v[0] / static_cast<double>(std::max<int64_t>(o.trained, 1));
  o.grad_norm = v[1];
  o.stop_vote = v[2] > 0;
}

}  // namespace

StepJudgement judge_finite(const StepOutcome& o) {
  if (std::isfinite(o.loss) && std::isfinite(o.grad_norm)) return {};
  return {StepVerdict::NonFinite, fmt::format("non-finite loss {} or grad norm {}", o.loss, o.grad_norm)};
}

at::Tensor micro_batch_loss(parallel::ShardedModel& model, const PackedBatch& b, AttentionMode attention,
                            c10::Device dev) {
  const auto spec =
      attention_spec(attention == AttentionMode::Document ? b.doc_ids : at::Tensor(), dev, model.compute_dtype());
  return model.loss_sum(b.tokens.to(dev, /*non_blocking=*/true), b.positions.to(dev, /*non_blocking=*/true), spec,
                        b.targets.to(dev, /*non_blocking=*/true),
                        // Counted on the host copy (no device sync); batches already on a device skip it.
                        b.targets.device().is_cpu() ? count_trained(b.targets) : -1);
}

StepOutcome forward_backward(parallel::ShardedModel& model, const std::vector<PackedBatch>& batches,
                             AttentionMode attention, parallel::ProcessGroup& dist, StepPhaseTimes* times) {
  StepOutcome out;
  if (batches.empty()) fail("a training step needs at least one micro-batch");
  int64_t local_trained = 0, local_real = 0, local_slots = 0;
  for (const auto& b : batches) {
    local_trained += b.trained_tokens;
    local_real += b.real_tokens;
    local_slots += b.tokens.numel();
  }
  // The counts are summed over the ranks on the device and the denominator of every micro-batch's
  // loss stays there: reading them here would be a second host sync. They come back with the
  // step's fetch. Token counts are exact in a double up to 2^53.
  out.counts = at::tensor({static_cast<double>(local_trained), static_cast<double>(local_real),
                           static_cast<double>(local_slots)},
                          at::kDouble)
                   .to(dist.device(), /*non_blocking=*/true);
  if (dist.world_size() > 1) dist.all_reduce(out.counts, parallel::Reduce::Sum, "token counts");
  // Each micro-batch's summed loss is scaled by 1 / the step's trained tokens (all ranks) before
  // backward: the gradient is that of the step's token mean. The reciprocal is taken in fp64 and
  // rounded once to fp32, the loss's dtype, as dividing the fp32 loss by the count did.
  const at::Tensor inv_denom = out.counts.select(0, 0).clamp_min(1.0).reciprocal().to(at::kFloat);
  out.loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(dist.device()));
  auto clock = Clock::now();
  for (const auto& b : batches) {
    auto sum = micro_batch_loss(model, b, attention, dist.device());
    if (times) times->forward += phase_end(clock, dist);
    (sum * inv_denom).backward();
    out.loss_sum = out.loss_sum + sum.detach().to(at::kDouble);
    if (times) times->backward += phase_end(clock, dist);
  }
  model.finish_backward();
  dist.all_reduce(out.loss_sum, parallel::Reduce::Sum, "loss");
  if (times) times->reduce += phase_end(clock, dist);
  return out;
}

StepOutcome train_step(parallel::ShardedModel& model, AdamW& opt, const std::vector<PackedBatch>& batches,
                       const StepRequest& req, parallel::ProcessGroup& dist) {
  StepOutcome o = forward_backward(model, batches, req.attention, dist, req.phase_times);
  auto clock = Clock::now();
  // Ranks see a signal at different moments: they vote, so all stop after the same step.
  auto vote = at::full({}, req.stop_requested ? 1.0 : 0.0, at::TensorOptions().dtype(at::kDouble).device(dist.device()));
  if (dist.world_size() > 1) dist.all_reduce(vote, parallel::Reduce::Max, "stop signal");
  fetch_step_scalars(o, model.clip_grad_norm(req.clip_grad_norm), vote, dist);
  o.judgement = req.judge ? req.judge(o) : judge_finite(o);
  if (o.judgement.applied()) {
    model.before_optimizer_step();  // offload: the host grads are clipped now that the sync has passed
    opt.step(req.lr);
    model.after_optimizer_step();
  }
  opt.zero_grad();
  if (req.phase_times) req.phase_times->optimizer += phase_end(clock, dist);
  return o;
}

double validation_loss(parallel::ShardedModel& model, const std::vector<PackedBatch>& batches, AttentionMode attention,
                       c10::Device dev) {
  if (batches.empty()) return std::nan("");
  torch::NoGradGuard ng;
  // Adapter dropout is off while evaluating (torch's model.eval()), on again after, errors included.
  struct EvalMode {
    LlamaForCausalLM m;
    explicit EvalMode(LlamaForCausalLM model) : m(std::move(model)) { m->eval(); }
    ~EvalMode() { m->train(); }
  } eval_mode(model.model());
  at::Tensor sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(dev));
  int64_t n = 0;
  for (const auto& b : batches) {
    sum = sum + micro_batch_loss(model, b, attention, dev).to(at::kDouble);
    n += b.trained_tokens;
  }
  return sum.item<double>() / static_cast<double>(std::max<int64_t>(n, 1));
}

}  // namespace agenttune
