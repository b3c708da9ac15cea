#include "agenttune/train/trainer.h"

#include <optional>
#include <vector>

#include "agenttune/eval/eval_report.h"
#include "agenttune/eval/eval_run.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/train/bad_step.h"
#include "agenttune/train/batch_prefetch.h"
#include "agenttune/train/checkpoint_schedule.h"
#include "agenttune/train/run_report.h"
#include "agenttune/train/step.h"
#include "agenttune/train/stop_signal.h"
#include "agenttune/train/train_run.h"
#include "agenttune/util/log.h"
#include "agenttune/util/seeded.h"

namespace agenttune {

namespace {

// This rank's share of every step: micro-batches per step and their size.
StepBatchShape step_batch_shape(const TrainRun& run) {
  return {run.batch.micro_batches, run.cfg.train.micro_batch_size, run.dist->rank(), run.dist->world_size()};
}

StepRequest step_request(const TrainConfig& cfg, double lr, const BadStepPolicy& policy) {
  StepRequest req;
  req.attention = cfg.data.attention;
  req.clip_grad_norm = cfg.train.clip_grad_norm;
  req.lr = lr;
  req.stop_requested = StopSignal::requested();
  req.judge = [&policy](const StepOutcome& o) { return policy.judge(o); };
  return req;
}

// Adapter dropout's seed for a step on a rank: a function of where the run is, so resuming,
// resharding or rolling back draws the masks an uninterrupted run would.
uint64_t dropout_seed(uint64_t train_seed, int64_t step, int rank) {
  return splitmix64(splitmix64(splitmix64(train_seed) ^ static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(rank));
}

// The `eval:` section's records, template and tokenizer, read once before the first step. Its
// tokenizer defaults to the one the data was made with, else the initial model folder's; replies
// end at the model's end-of-sequence ids too: the initial folder's (generation_config.json's when
// it has them, as transformers' generate takes them), or the shape's.
std::optional<eval::EvalInputs> eval_inputs(const TrainRun& run) {
  if (!run.cfg.eval) return std::nullopt;
  const auto& model = run.model->config();
  const auto& init = run.cfg.model.init_from;
  const auto tokenizer = run.cfg.data.tokenizer.empty() ? init : run.cfg.data.tokenizer;
  const auto eos = init.empty() ? model.eos_token_ids() : generation_eos_token_ids(init, model);
  return eval::load_eval_inputs(*run.cfg.eval, tokenizer, model.vocab_size, eos);
}

// Every train.eval_interval steps: the loss on the held-out documents and the `eval:` section's
// metrics on the current weights, the same on every rank.
void evaluate_if_due(TrainRun& run, const std::optional<eval::EvalInputs>& inputs, StepMeasures& m) {
  const TrainSection& t = run.cfg.train;
  if (t.eval_interval <= 0 || run.prog.step % t.eval_interval != 0) return;
  if (run.cfg.data.validation_fraction > 0)
    m.val_loss = validation_loss(*run.sharded, run.data->validation_batches(t.micro_batch_size, t.eval_batches),
                                 run.cfg.data.attention, run.dist->device());
  if (!inputs) return;
  const auto results = eval::run_eval(*eval::sharded_eval_model(*run.sharded, *run.dist), *inputs);
  m.eval = eval::eval_scalars(results);
  if (run.main) log::info("step {}: eval\n{}", run.prog.step, eval::format_tables(results));
}

}  // namespace

TrainResult train(const TrainConfig& config, const TrainOptions& opts) {
  TrainRun run = build_run(config, opts);
  BadStepPolicy policy(bad_step_options(run.cfg), run.prog);
  const CheckpointSchedule schedule(checkpoint_schedule_options(run.cfg, opts));
  RunReport report(run, opts.progress);
  const auto evals = eval_inputs(run);
  StopSignal stop;
  // After the run: destroyed first, waiting for a read in flight before the mixture goes.
  BatchPrefetch prefetch(*run.data, step_batch_shape(run), run.dist->device());
  while (run.prog.step < run.cfg.train.max_steps) {
    const StepClock clock(*run.dist);
    StepMeasures m;
    m.lr = run.sched.lr(run.prog.step);
    // The next step's batches are read on a thread while this one trains (none after the last).
    const auto batches = prefetch.next(run.prog.step + 1 < run.cfg.train.max_steps);
    m.data_seconds = clock.seconds();
    run.sharded->seed_dropout(dropout_seed(run.cfg.train.seed, run.prog.step, run.dist->rank()));
    const StepOutcome o = report.counted_step(run, batches, step_request(run.cfg, m.lr, policy));
    // From here on the mixture is where this step's batches left it: what a checkpoint, the
    // shares and a rollback see. Waiting for a read slower than the step counts as data time.
    const double stepped = clock.seconds();
    prefetch.settle();
    m.data_seconds += clock.seconds() - stepped;
    if (policy.after_step(o, run.prog, run.result.last_checkpoint) == BadStepPolicy::Next::RollBack) {
      report.rolled_back(run.prog.step + 1, o, m.lr);
      roll_back(run, policy);
      continue;
    }
    ++run.prog.step;
    run.prog.tokens += o.real;  // tokens the model read (padding excluded)
    run.result.losses.push_back(o.loss);
    m.tokens_total = run.prog.tokens;
    clock.stamp(m);
    evaluate_if_due(run, evals, m);
    report.step(run, o, m);
    const RunEnd end = save_if_due(run, schedule, o.stop_vote);
    if (end != RunEnd::Continue) {
      report.ended(run, end, opts.exit_after_steps);
      run.result.interrupted = end == RunEnd::Stopped;
      break;
    }
  }
  report.finish(run);
  run.result.final_step = run.prog.step;
  return std::move(run.result);
}

}  // namespace agenttune
