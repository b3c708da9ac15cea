#include "agenttune/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cmath>
#include <map>

#include "agenttune/config/load.h"
#include "agenttune/dist/device.h"
#include "agenttune/dist/dist.h"
#include "agenttune/dist/host_syncs.h"
#include "agenttune/dist/rendezvous.h"
#include "agenttune/dist/sharded_model.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/model/flops.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/data_resolution.h"
#include "agenttune/train/device_peak.h"
#include "agenttune/train/initial_model.h"
#include "agenttune/train/loss_spike.h"
#include "agenttune/train/metrics.h"
#include "agenttune/train/model_fit.h"
#include "agenttune/train/resume_changes.h"
#include "agenttune/train/run_lock.h"
#include "agenttune/train/step.h"
#include "agenttune/train/stop_signal.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "agenttune/util/sha256.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

struct StepBatch {
  int64_t micro_batches = 1;  // per rank per step
  int64_t sequences = 0;      // per step, all ranks
};

StepBatch split_global_batch(const TrainConfig& cfg, int world) {
  // The global batch is fixed by the config; the world size only changes how it is split.
  const int64_t seqs = global_batch_sequences(cfg);
  int64_t per_micro = cfg.train.micro_batch_size * world;
  if (seqs % per_micro != 0)
    fail("global batch of {} sequences is not a multiple of micro_batch_size {} x {} rank(s)", seqs,
         cfg.train.micro_batch_size, world);
  return {seqs / per_micro, seqs};
}

// The step's micro-batches for this rank, read from the mixture.
std::vector<PackedBatch> next_step_batches(Mixture& data, const TrainConfig& cfg, int64_t micro_batches,
                                           const dist::Dist& dist) {
  std::vector<PackedBatch> batches;
  for (int64_t i = 0; i < micro_batches; ++i)
    batches.push_back(data.next_batch(cfg.train.micro_batch_size, dist.rank(), dist.world_size()));
  return batches;
}

// Why a step's update must not be applied ("" when it may): a non-finite loss or grad norm, or
// a loss spike when train.spike_zscore is set. Every rank sees the same reduced numbers, so every
// rank reaches the same verdict.
std::string judge_step(const StepOutcome& o, const TrainSection& t, const LossSpikeDetector& spikes) {
  if (auto bad = judge_finite(o); !bad.empty()) return bad;
  if (t.spike_zscore > 0) {
    double z = spikes.zscore(o.loss);
    if (z > t.spike_zscore)
      return fmt::format("loss spike {:.4f} ({:.1f} standard deviations above the last {} steps)", o.loss, z,
                         t.spike_window);
  }
  return "";
}

// train.on_nonfinite: rollback. Weights, optimizer, step and RNG return to the last good
// checkpoint; the data stream does not, so the windows that led to the bad step are skipped
// (Megatron re-runs the same data, llm.c skips one update; neither does both).
TrainProgress roll_back(const fs::path& good, dist::ShardedModel& model, AdamW& opt, Mixture& data,
                        const TrainProgress& now, const TrainConfig& cfg, std::map<int64_t, int64_t>& rollbacks_to) {
  const MixtureState stream = data.state();
  TrainProgress back = load_train_state(good, model, opt, data);
  const int64_t skipped = stream.windows - data.state().windows;
  data.restore(stream);
  back.nonfinite_in_a_row = now.nonfinite_in_a_row;  // the streak ends only with a good step
  if (++rollbacks_to[back.step] > cfg.train.max_nonfinite_in_a_row)
    fail("rolled back to {} {} times and the run still goes bad; stopping (lower train.lr, or check the data)",
         good.string(), rollbacks_to[back.step] - 1);
  log::warn("rollback: step {} reloaded from {}; the {} sequence(s) of steps {}..{} that led here are skipped",
            back.step, good.string(), skipped, back.step + 1, now.step + 1);
  return back;
}

// Checked before each save only: a pass over the shards, with one flag reduced over the ranks.
bool weights_finite(dist::ShardedModel& model, dist::Dist& dist) {
  bool ok = true;
  for (const auto& [name, t] : model.shard_params()) ok = ok && at::isfinite(t).all().item<bool>();
  return dist.all_reduce(ok ? 1.0 : 0.0, dist::Reduce::Min, "weights finite") > 0;
}

// A source prepared with the chat template's added tokens (ChatML) may grow the model by exactly
// those; a manifest that claims more than the model plus its listed added tokens is wrong data.
void check_vocab_growth(const Mixture& data, int64_t model_vocab) {
  const auto& sources = data.options().sources;
  for (size_t i = 0; i < sources.size(); ++i) {
    const auto& s = sources[i];
    const auto path = s.format == SourceFormat::Megatron ? s.path : s.path / "manifest.json";
    const auto& m = data.manifest(i);
    const int64_t base = m.vocab_size - static_cast<int64_t>(m.added_tokens.size());
    if (m.vocab_size > model_vocab && base > model_vocab)
      fail("{}: vocab_size {} exceeds the model's {} by {}, but the manifest lists {} added token(s); only a "
           "chat template's added tokens may grow the model (was it prepared with another tokenizer?)",
           path.string(), m.vocab_size, model_vocab, m.vocab_size - model_vocab, m.added_tokens.size());
  }
}

// Rank 0 takes the run lock and clears what interrupted saves left; every rank learns the
// outcome, so a refused run ends on all ranks at once instead of timing out in a collective.
std::unique_ptr<RunLock> lock_output_dir(const TrainConfig& cfg, CheckpointStore& store, dist::Dist& dist) {
  std::unique_ptr<RunLock> lock;
  std::string error;
  if (dist.is_main()) {
    try {
      lock = std::make_unique<RunLock>(cfg.output_dir);
      if (fs::is_directory(store.root())) store.remove_leftovers();
    } catch (const Error& e) {
      error = e.what();
    }
  }
  bool refused = dist.all_reduce(error.empty() ? 0.0 : 1.0, dist::Reduce::Max, "run lock") > 0;
  if (!error.empty()) throw Error(error);
  if (refused) fail("{}: rank 0 could not lock the output folder (its log says why)", cfg.output_dir.string());
  return lock;
}

}  // namespace

TrainResult train(const TrainConfig& config, const TrainOptions& opts) {
  // model.shape is filled from model.init_from (and checked against it): the resolved config and
  // every checkpoint's copy show the architecture trained.
  const TrainConfig cfg = with_fitted_architecture(resolve_data_config(config));
  auto world = dist::world_from_env(dist::process_env());
  if (!world.is_main()) log::set_level(log::Level::Warn);  // one voice: rank 0 reports
  dist::DistOptions dopts;
  dopts.backend = cfg.dist.backend;
  dopts.timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.dist.timeout_s * 1000));
  // The rank's device is chosen and made current before anything is allocated on it.
  auto dist = dist::Dist::create(world, dist::select_device(cfg.dist.device, "dist.device", world.local_rank), dopts);
  const bool main = dist->is_main();
  CheckpointStore store(cfg.checkpoint.dir.empty() ? cfg.output_dir / "checkpoints" : cfg.checkpoint.dir,
                        cfg.checkpoint.keep_last);
  auto lock = lock_output_dir(cfg, store, *dist);

  if (main) write_resolved_config(cfg.output_dir / "config.yaml", cfg);
  // Stored in every checkpoint: the resolved YAML, and the tokenizer that export copies.
  nlohmann::json config_json = {{"yaml", dump_config(cfg)}, {"tokenizer", cfg.data.tokenizer.string()}};
  if (cfg.train.threads > 0) at::set_num_threads(cfg.train.threads);

  Mixture data(mixture_options(cfg));
  // Master weights are fp32 whatever the checkpoint holds; the sharded model gathers them in the
  // compute dtype.
  InitialModel initial = initial_model(cfg);
  log::info("model: {}", initial.description);
  auto& model = initial.model;
  check_vocab_growth(data, model->config().vocab_size);
  if (data.max_vocab_size() > model->config().vocab_size) {
    log::info("model: vocabulary grows from {} to {} tokens for the data's added tokens", model->config().vocab_size,
              data.max_vocab_size());
    grow_initial_vocab(initial, data.max_vocab_size());
  }
  data.set_model_vocab(model->config().vocab_size);
  dist::ShardOptions so;
  so.strategy = dist::parse_shard_strategy(cfg.dist.strategy);
  so.compute_dtype = cfg.model.compute_dtype;
  so.hybrid_group_size = cfg.dist.hybrid_group_size;
  so.prefetch = cfg.dist.prefetch;
  so.reshard_after_forward = cfg.dist.reshard_after_forward;
  model->activation_checkpointing = cfg.model.activation_checkpointing;
  // The model stays in host memory: the sharded model copies only this rank's shards to the device.
  dist::ShardedModel sharded(model, *dist, world, so, initial.weights);
  initial.weights = nullptr;  // the checkpoint's mapping is no longer needed
  initial.source.reset();
  AdamW opt(sharded.shard_params(), {cfg.train.beta1, cfg.train.beta2, cfg.train.eps, cfg.train.weight_decay},
            sharded.shard_decay());
  LrSchedule sched{cfg.train.lr,           cfg.train.warmup_steps, cfg.train.max_steps,
                   cfg.train.decay,        cfg.train.min_lr_ratio, cfg.train.warmup_start_ratio};
  auto plan = split_global_batch(cfg, dist->world_size());

  TrainProgress prog;
  TrainResult result;
  if (!opts.resume.empty()) {
    std::optional<fs::path> from = opts.resume == "auto" ? store.latest() : std::optional<fs::path>(opts.resume);
    if (from) {
      prog = load_train_state(*from, sharded, opt, data);
      result.last_checkpoint = *from;
      log::info("resumed from {} at step {} ({} tokens)", from->string(), prog.step, prog.tokens);
      if (main)
        for (const auto& change : schedule_changes(checkpoint_config_yaml(*from), dump_config(cfg), prog.step))
          log::warn("{}", change);
      if (auto newest = store.latest(); newest && *newest != *from && opts.resume != "auto")
        log::warn("{} holds a newer checkpoint ({}) than {}: this run's first save moves it to abandoned_{}",
                  store.root().string(), newest->filename().string(), from->filename().string(),
                  newest->filename().string());
    } else {
      log::info("--resume auto: no complete checkpoint in {}, starting fresh", store.root().string());
    }
  }
  result.start_step = prog.step;

  std::unique_ptr<MetricsLogger> metrics;
  if (main) metrics = std::make_unique<MetricsLogger>(cfg.output_dir, cfg.metrics.tensorboard);
  LossSpikeDetector spikes(cfg.train.spike_window);
  spikes.restore(prog.loss_window);
  std::map<int64_t, int64_t> rollbacks_to;  // checkpoint step -> rollbacks to it in this process
  ProgressLine progress(cfg.train.max_steps, prog.step);
  auto flops = training_flops_per_token(model->config(), cfg.data.seq_len);
  const DevicePeak peak = device_peak(dist->device(), cfg.metrics.peak_tflops);
  if (peak.flops > 0)
    log::info("mfu: against {:.0f} TFLOP/s per device ({}{})", peak.flops / 1e12, peak.source,
              peak.device_name.empty() ? "" : ", " + peak.device_name);
  // Opened before the loop so that a CPU device fails at once, not after the first step.
  std::unique_ptr<dist::HostSyncCounter> syncs;
  if (cfg.metrics.host_syncs) syncs = std::make_unique<dist::HostSyncCounter>(dist->device());
  StopSignal stop;
  log::info("training: {} steps x {} sequences x {} tokens on {} rank(s) ({}, {}), {} micro-batch(es) of {} per rank",
            cfg.train.max_steps, plan.sequences, cfg.data.seq_len, dist->world_size(), cfg.dist.strategy,
            dist->backend_name(), plan.micro_batches, cfg.train.micro_batch_size);

  while (prog.step < cfg.train.max_steps) {
    auto t0 = std::chrono::steady_clock::now();
    double comm0 = dist->comm_seconds(), inflight0 = dist->inflight_seconds();
    const double lr = sched.lr(prog.step);
    StepRequest req;
    req.attention = cfg.data.attention;
    req.clip_grad_norm = cfg.train.clip_grad_norm;
    req.lr = lr;
    req.stop_requested = StopSignal::requested();
    req.judge = [&](const StepOutcome& o) { return judge_step(o, cfg.train, spikes); };
    auto batches = next_step_batches(data, cfg, plan.micro_batches, *dist);
    if (syncs) syncs->start();
    const StepOutcome o = train_step(sharded, opt, batches, req, *dist);
    const int64_t step_syncs = syncs ? syncs->stop() : 0;
    if (syncs && step_syncs > 1)
      log::debug("step {}: {} host syncs, the first at {}", prog.step + 1, step_syncs, syncs->first_site());
    const std::string& bad = o.skipped;
    if (!bad.empty()) {
      ++prog.nonfinite_in_a_row;
      const std::string last_good =
          result.last_checkpoint.empty() ? std::string("(none yet)") : result.last_checkpoint.string();
      log::warn("step {}: {}: update skipped ({} in a row)", prog.step + 1, bad, prog.nonfinite_in_a_row);
      if (cfg.train.on_nonfinite == NonfiniteAction::Stop || prog.nonfinite_in_a_row >= cfg.train.max_nonfinite_in_a_row)
        fail("stopping after {} bad step(s) in a row (train.on_nonfinite: {}); the last good checkpoint is {}",
             prog.nonfinite_in_a_row, ConfigScalar<NonfiniteAction>::format(cfg.train.on_nonfinite), last_good);
      if (cfg.train.on_nonfinite == NonfiniteAction::Rollback && !result.last_checkpoint.empty()) {
        if (main) metrics->log(prog.step + 1, {{"loss", o.loss}, {"lr", lr}, {"grad_norm", o.grad_norm}, {"skipped", 1.0}});
        prog = roll_back(result.last_checkpoint, sharded, opt, data, prog, cfg, rollbacks_to);
        spikes.restore(prog.loss_window);
        continue;
      }
    } else {
      prog.nonfinite_in_a_row = 0;
      spikes.push(o.loss);
      prog.loss_window = spikes.values();
    }
    ++prog.step;
    // Tokens the model read (padding excluded): what throughput and MFU are honest about.
    const int64_t step_tokens = o.real;
    prog.tokens += step_tokens;
    result.losses.push_back(o.loss);

    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double comm = dist->comm_seconds() - comm0;
    double inflight = dist->inflight_seconds() - inflight0;  // NaN (written as null) on NCCL
    double tps = step_tokens / std::max(dt, 1e-9);
    // Per device: the step's tokens were shared by every rank's device.
    double mfu = peak.flops > 0 ? flops.full * tps / (peak.flops * dist->world_size()) : -1.0;  // < 0: unknown
    bool eval = cfg.train.eval_interval > 0 && prog.step % cfg.train.eval_interval == 0;
    double val = eval ? validation_loss(sharded, data.validation_batches(cfg.train.micro_batch_size, cfg.train.eval_batches),
                                        cfg.data.attention, dist->device())
                      : 0.0;
    if (main) {
      std::vector<std::pair<std::string, double>> row = {
          {"loss", o.loss}, {"lr", lr}, {"grad_norm", o.grad_norm}, {"tokens_total", static_cast<double>(prog.tokens)},
          {"step_tokens", static_cast<double>(step_tokens)}, {"step_trained_tokens", static_cast<double>(o.trained)},
          {"tokens_per_s", tps}, {"step_seconds", dt},
          {"comm_seconds", comm}, {"comm_inflight_seconds", inflight}};
      // Without a known peak (CPU) MFU is written as null rather than left out or faked.
      row.emplace_back("mfu", mfu >= 0 ? mfu : std::nan(""));
      if (syncs) row.emplace_back("host_syncs", static_cast<double>(step_syncs));
      auto shares = data.shares();
      for (size_t s = 0; s < shares.size(); ++s) row.emplace_back("share/" + cfg.data.sources[s].name, shares[s]);
      // Padding appears with pad, and with packed conversations (a row ends where the next
      // conversation would not fit).
      if (cfg.data.packing == Packing::Pad || data.has_conversations())
        row.emplace_back("pad_fraction", 1.0 - static_cast<double>(o.real) / static_cast<double>(std::max<int64_t>(o.slots, 1)));
      if (eval) row.emplace_back("val_loss", val);
      if (!bad.empty()) row.emplace_back("skipped", 1.0);
      if (prog.step % cfg.train.log_interval == 0 || prog.step == cfg.train.max_steps) metrics->log(prog.step, row);
      const std::optional<double> shown_val = eval ? std::optional<double>(val) : std::nullopt;
      if (opts.progress) progress.update(prog.step, o.loss, lr, tps, mfu, shown_val);
      else if (eval) log::info("step {}: val_loss {:.4f}", prog.step, val);
    }

    const bool stopping = o.stop_vote;
    bool exiting = opts.exit_after_steps > 0 && prog.step >= opts.exit_after_steps;
    const bool due = prog.step % cfg.checkpoint.interval == 0 || prog.step == cfg.train.max_steps || stopping || exiting;
    if (due && prog.nonfinite_in_a_row > 0) {
      // The weights are those of the last good step, but the streak's outcome is open: a save now
      // could prune the good checkpoint the streak may need to roll back to.
      log::warn("step {}: no checkpoint during a streak of {} bad step(s); the last good one is {}", prog.step,
                prog.nonfinite_in_a_row,
                result.last_checkpoint.empty() ? std::string("(none yet)") : result.last_checkpoint.string());
    } else if (due && !weights_finite(sharded, *dist)) {
      // A finite step can still overflow the weights in its update (a huge learning rate); the
      // next step's loss will say so, but a checkpoint of them must never be called good.
      ++prog.nonfinite_in_a_row;
      log::warn("step {}: the update left non-finite weights: not saved; the last good checkpoint is {}", prog.step,
                result.last_checkpoint.empty() ? std::string("(none yet)") : result.last_checkpoint.string());
    } else if (due) {
      result.last_checkpoint = save_train_state(store, sharded, opt, data, prog, config_json, *dist);
    }
    if (exiting && !stopping) {
      log::info("--exit-after-steps {}: last checkpoint {}", opts.exit_after_steps, result.last_checkpoint.string());
      break;
    }
    if (stopping) {
      if (metrics) metrics->flush();
      log::warn("stop signal at step {}: last checkpoint {}; exiting", prog.step, result.last_checkpoint.string());
      result.interrupted = true;
      break;
    }
  }
  if (opts.progress && main) progress.finish();
  for (size_t s = 0; s < cfg.data.sources.size(); ++s)
    if (data.epochs_done(s) > 0)
      log::info("data source '{}': {} full epoch(s) done, {} document(s) into the next", cfg.data.sources[s].name,
                data.epochs_done(s), data.state().sources[s].position);
  if (metrics) metrics->flush();
  result.final_step = prog.step;
  return result;
}

}  // namespace agenttune
