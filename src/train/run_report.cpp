#include "agenttune/train/run_report.h"

#include <cmath>

#include "agenttune/train/train_run.h"
#include "agenttune/util/log.h"

namespace agenttune {

MetricsRow metrics_row(const StepOutcome& o, const StepMeasures& m, const DataColumns& data) {
  MetricsRow row = {{"loss", o.loss},
                    {"lr", m.lr},
                    {"grad_norm", o.grad_norm},
                    {"tokens_total", static_cast<double>(m.tokens_total)},
                    {"step_tokens", static_cast<double>(o.real)},
                    {"step_trained_tokens", static_cast<double>(o.trained)},
                    {"tokens_per_s", m.tokens_per_s},
                    {"step_seconds", m.seconds},
                    {"comm_seconds", m.comm_seconds},
                    {"comm_inflight_seconds", m.inflight_seconds}};
  // Without a known peak (CPU) MFU is written as null rather than left out or faked.
  row.emplace_back("mfu", m.mfu >= 0 ? m.mfu : std::nan(""));
  if (m.host_syncs) row.emplace_back("host_syncs", static_cast<double>(*m.host_syncs));
  for (const auto& [name, share] : data.shares) row.emplace_back("share/" + name, share);
  if (data.padding)
    row.emplace_back("pad_fraction",
                     1.0 - static_cast<double>(o.real) / static_cast<double>(std::max<int64_t>(o.slots, 1)));
  if (m.val_loss) row.emplace_back("val_loss", *m.val_loss);
  if (!o.judgement.applied()) row.emplace_back("skipped", 1.0);
  return row;
}

MetricsRow rolled_back_row(const StepOutcome& o, double lr) {
  return {{"loss", o.loss}, {"lr", lr}, {"grad_norm", o.grad_norm}, {"skipped", 1.0}};
}

double model_flops_utilisation(double flops_per_token, double tokens_per_s, double peak_flops, int world) {
  return peak_flops > 0 ? flops_per_token * tokens_per_s / (peak_flops * world) : -1.0;
}

StepClock::StepClock(const parallel::ProcessGroup& dist)
    : dist_(dist),
      t0_(std::chrono::steady_clock::now()),
      comm0_(dist.comm_seconds()),
      inflight0_(dist.inflight_seconds()) {}

void StepClock::stamp(StepMeasures& m) const {
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  m.comm_seconds = dist_.comm_seconds() - comm0_;
  m.inflight_seconds = dist_.inflight_seconds() - inflight0_;
}

RunReport::RunReport(const TrainRun& run, bool progress)
    : progress_(progress),
      line_(run.cfg.train.max_steps, run.prog.step),
      flops_(training_flops_per_token(run.model->config(), run.cfg.data.seq_len)),
      peak_(device_peak(run.dist->device(), run.cfg.metrics.peak_tflops)) {
  const TrainConfig& cfg = run.cfg;
  if (run.main) metrics_ = std::make_unique<MetricsLogger>(cfg.output_dir, cfg.metrics.tensorboard);
  if (peak_.flops > 0)
    log::info("mfu: against {:.0f} TFLOP/s per device ({}{})", peak_.flops / 1e12, peak_.source,
              peak_.device_name.empty() ? "" : ", " + peak_.device_name);
  if (cfg.metrics.host_syncs) syncs_ = std::make_unique<parallel::HostSyncCounter>(run.dist->device());
  log::info("training: {} steps x {} sequences x {} tokens on {} rank(s) ({}, {}), {} micro-batch(es) of {} per rank",
            cfg.train.max_steps, run.batch.sequences, cfg.data.seq_len, run.dist->world_size(),
            enum_name(cfg.dist.strategy), run.dist->backend_name(), run.batch.micro_batches,
            cfg.train.micro_batch_size);
}

StepOutcome RunReport::counted_step(TrainRun& run, const std::vector<PackedBatch>& batches, const StepRequest& req) {
  if (syncs_) syncs_->start();
  StepOutcome o = train_step(*run.sharded, *run.opt, batches, req, *run.dist);
  if (!syncs_) return o;
  last_syncs_ = syncs_->stop();
  if (last_syncs_ > 1)
    log::debug("step {}: {} host syncs, the first at {}", run.prog.step + 1, last_syncs_, syncs_->first_site());
  return o;
}

void RunReport::step(const TrainRun& run, const StepOutcome& o, StepMeasures& m) {
  const TrainConfig& cfg = run.cfg;
  const int64_t step = run.prog.step;
  m.tokens_per_s = o.real / std::max(m.seconds, 1e-9);
  m.mfu = model_flops_utilisation(flops_.full, m.tokens_per_s, peak_.flops, run.dist->world_size());
  if (syncs_) m.host_syncs = last_syncs_;
  if (!run.main) return;
  if (step % cfg.train.log_interval == 0 || step == cfg.train.max_steps) {
    DataColumns data{{}, cfg.data.packing == Packing::Pad || run.data->has_conversations()};
    const auto shares = run.data->shares();
    for (size_t s = 0; s < shares.size(); ++s) data.shares.emplace_back(cfg.data.sources[s].name, shares[s]);
    metrics_->log(step, metrics_row(o, m, data));
  }
  if (progress_) line_.update(step, o.loss, m.lr, m.tokens_per_s, m.mfu, m.val_loss);
  else if (m.val_loss) log::info("step {}: val_loss {:.4f}", step, *m.val_loss);
}

void RunReport::rolled_back(int64_t step, const StepOutcome& o, double lr) {
  if (metrics_) metrics_->log(step, rolled_back_row(o, lr));
}

void RunReport::ended(const TrainRun& run, RunEnd end, int64_t exit_after_steps) {
  const std::string last = run.result.last_checkpoint.string();
  if (end == RunEnd::ExitAfterSteps) {
    log::info("--exit-after-steps {}: last checkpoint {}", exit_after_steps, last);
  } else if (end == RunEnd::Stopped) {
    if (metrics_) metrics_->flush();
    log::warn("stop signal at step {}: last checkpoint {}; exiting", run.prog.step, last);
  }
}

void RunReport::finish(const TrainRun& run) {
  if (progress_ && run.main) line_.finish();
  const auto& sources = run.cfg.data.sources;
  for (size_t s = 0; s < sources.size(); ++s)
    if (run.data->epochs_done(s) > 0)
      log::info("data source '{}': {} full epoch(s) done, {} document(s) into the next", sources[s].name,
                run.data->epochs_done(s), run.data->state().sources[s].position);
  if (metrics_) metrics_->flush();
}

}  // namespace agenttune
