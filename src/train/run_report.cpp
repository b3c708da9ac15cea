#include "agenttune/train/run_report.h"

#include <sys/resource.h>

#include <cmath>

#include "agenttune/train/train_run.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace {

int64_t minor_faults_so_far() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

}  // namespace

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
  if (m.peak_device_bytes) row.emplace_back("peak_device_bytes", static_cast<double>(*m.peak_device_bytes));
  if (m.phases) {
    for (const auto& [name, seconds] : phase_columns(*m.phases)) row.emplace_back("phase_" + name + "_seconds", seconds);
    row.emplace_back("minor_faults", static_cast<double>(m.phases->minor_faults));
  }
  for (const auto& [name, share] : data.shares) row.emplace_back("share/" + name, share);
  if (data.padding)
    row.emplace_back("pad_fraction",
                     1.0 - static_cast<double>(o.real) / static_cast<double>(std::max<int64_t>(o.slots, 1)));
  if (m.val_loss) row.emplace_back("val_loss", *m.val_loss);
  row.insert(row.end(), m.eval.begin(), m.eval.end());
  if (!o.judgement.applied()) row.emplace_back("skipped", 1.0);
  return row;
}

MetricsRow rolled_back_row(const StepOutcome& o, double lr) {
  return {{"loss", o.loss}, {"lr", lr}, {"grad_norm", o.grad_norm}, {"skipped", 1.0}};
}

std::vector<std::pair<std::string, double>> phase_columns(const PhaseSeconds& p) {
  return {{"data", p.data},          {"forward", p.step.forward},     {"backward", p.step.backward},
          {"reduce", p.step.reduce}, {"optimizer", p.step.optimizer}, {"other", p.other}};
}

std::string PhaseTable::format() const {
  if (steps_.empty()) return "phase times: no step ran";
  const size_t first = steps_.size() > 1 ? 1 : 0;
  const double n = static_cast<double>(steps_.size() - first);
  std::vector<std::pair<std::string, double>> mean = phase_columns({});
  for (size_t s = first; s < steps_.size(); ++s) {
    const auto cols = phase_columns(steps_[s]);
    for (size_t i = 0; i < cols.size(); ++i) mean[i].second += cols[i].second / n;
  }
  double total = 0, faults = 0;
  for (const auto& [name, seconds] : mean) total += seconds;
  for (size_t s = first; s < steps_.size(); ++s) faults += static_cast<double>(steps_[s].minor_faults) / n;
  std::string out = fmt::format("phase times, mean of {} step(s){} (each phase drains the device: no overlap)\n",
                                steps_.size() - first, first ? " after the first" : "");
  out += fmt::format("  {:<10} {:>12} {:>7}\n", "phase", "ms/step", "share");
  for (const auto& [name, seconds] : mean)
    out += fmt::format("  {:<10} {:>12.1f} {:>6.1f}%\n", name, seconds * 1e3, total > 0 ? 100 * seconds / total : 0.0);
  out += fmt::format("  {:<10} {:>12.1f} {:>6.1f}%\n", "step", total * 1e3, 100.0);
  out += fmt::format("  minor page faults per step: {:.0f}", faults);
  return out;
}

double model_flops_utilisation(double flops_per_token, double tokens_per_s, double peak_flops, int world) {
  return peak_flops > 0 ? flops_per_token * tokens_per_s / (peak_flops * world) : -1.0;
}

StepClock::StepClock(const parallel::ProcessGroup& dist)
    : dist_(dist),
      t0_(std::chrono::steady_clock::now()),
      comm0_(dist.comm_seconds()),
      inflight0_(dist.inflight_seconds()) {}

double StepClock::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

void StepClock::stamp(StepMeasures& m) const {
  m.seconds = seconds();
  m.comm_seconds = dist_.comm_seconds() - comm0_;
  m.inflight_seconds = dist_.inflight_seconds() - inflight0_;
}

RunReport::RunReport(const TrainRun& run, bool progress)
    : progress_(progress),
      line_(run.cfg.train.max_steps, run.prog.step),
      flops_(training_flops_per_token(run.model->config(), run.cfg.data.seq_len)),
      peak_(device_peak(run.dist->device(), run.cfg.metrics.peak_tflops)),
      profile_phases_(run.cfg.metrics.phase_times),
      faults_at_last_step_(minor_faults_so_far()) {
  const TrainConfig& cfg = run.cfg;
  if (run.main) metrics_ = std::make_unique<MetricsLogger>(cfg.output_dir, cfg.metrics.tensorboard);
  if (peak_.flops > 0)
    log::info("mfu: against {:.0f} TFLOP/s per device ({}{})", peak_.flops / 1e12, peak_.source,
              peak_.device_name.empty() ? "" : ", " + peak_.device_name);
  if (cfg.metrics.host_syncs) syncs_ = std::make_unique<parallel::HostSyncCounter>(run.dist->device());
  if (const auto dev = run.dist->device(); !dev.is_cpu()) {
    device_stats_ = dynamic_cast<c10::DeviceAllocator*>(c10::GetAllocator(dev.type()));
    device_index_ = dev.index() < 0 ? 0 : dev.index();
  }
  log::info("training: {} steps x {} sequences x {} tokens on {} rank(s) ({}, {}), {} micro-batch(es) of {} per rank",
            cfg.train.max_steps, run.batch.sequences, cfg.data.seq_len, run.dist->world_size(),
            enum_name(cfg.dist.strategy), run.dist->backend_name(), run.batch.micro_batches,
            cfg.train.micro_batch_size);
}

StepOutcome RunReport::counted_step(TrainRun& run, const std::vector<PackedBatch>& batches, const StepRequest& req) {
  StepRequest timed = req;
  if (profile_phases_) {
    step_phases_ = {};
    timed.phase_times = &step_phases_;
  }
  if (syncs_) syncs_->start();
  if (device_stats_) device_stats_->resetPeakStats(device_index_);
  StepOutcome o = train_step(*run.sharded, *run.opt, batches, timed, *run.dist);
  if (device_stats_)
    last_peak_ = device_stats_->getDeviceStats(device_index_)
                     .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
                     .peak;
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
  m.peak_device_bytes = last_peak_;
  if (profile_phases_) {
    const StepPhaseTimes& t = step_phases_;
    const int64_t faults = minor_faults_so_far();
    m.phases = PhaseSeconds{m.data_seconds, t,
                            m.seconds - m.data_seconds - t.forward - t.backward - t.reduce - t.optimizer,
                            faults - std::exchange(faults_at_last_step_, faults)};
    phase_table_.add(*m.phases);
  }
  if (!run.main) return;
  // An evaluated step gets its row whatever log_interval says: a loss computed and not written is lost.
  if (step % cfg.train.log_interval == 0 || step == cfg.train.max_steps || m.val_loss || !m.eval.empty()) {
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
  if (profile_phases_ && run.main) log::info("{}", phase_table_.format());
  if (metrics_) metrics_->flush();
}

}  // namespace agenttune
