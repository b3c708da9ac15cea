#include "agenttune/train/train_run.h"

#include <ATen/Parallel.h>

#include "agenttune/config/load.h"
#include "agenttune/parallel/device.h"
#include "agenttune/parallel/rendezvous.h"
#include "agenttune/train/data_resolution.h"
#include "agenttune/train/initial_model.h"
#include "agenttune/train/memory_check.h"
#include "agenttune/train/model_fit.h"
#include "agenttune/train/resume_changes.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/host_memory.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

// Rank 0 takes the run lock and clears what interrupted saves left; every rank learns the
// outcome, so a refused run ends on all ranks at once instead of timing out in a collective.
std::unique_ptr<RunLock> lock_output_dir(const TrainConfig& cfg, CheckpointStore& store, parallel::ProcessGroup& dist) {
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
  bool refused = dist.all_reduce(error.empty() ? 0.0 : 1.0, parallel::Reduce::Max, "run lock") > 0;
  if (!error.empty()) throw Error(error);
  if (refused) fail("{}: rank 0 could not lock the output folder (its log says why)", cfg.output_dir.string());
  return lock;
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

// The initial model, its vocabulary grown for the data's added tokens, sharded over the ranks.
// Master weights are fp32 whatever the checkpoint holds; the sharded model gathers them in the
// compute dtype. The model stays in host memory: only this rank's shards go to the device.
void shard_initial_model(TrainRun& run, const parallel::WorldInfo& world) {
  const TrainConfig& cfg = run.cfg;
  InitialModel initial = initial_model(cfg);
  log::info("model: {}", initial.description);
  const int64_t vocab = initial.model->config().vocab_size;
  check_vocab_growth(*run.data, vocab);
  if (run.data->max_vocab_size() > vocab) {
    log::info("model: vocabulary grows from {} to {} tokens for the data's added tokens", vocab,
              run.data->max_vocab_size());
    grow_initial_vocab(initial, run.data->max_vocab_size());
    if (cfg.model.adapter.enabled())
      log::warn("model.adapter: the embedding and head are frozen under {}, so the {} added token(s) keep their "
                "initial rows (the mean of the others) for the whole run",
                enum_name(cfg.model.adapter.kind), run.data->max_vocab_size() - vocab);
  }
  run.data->set_model_vocab(initial.model->config().vocab_size);
  add_initial_adapters(initial, cfg.model.adapter);
  initial.model->recompute = cfg.model.activation_checkpointing;
  run.sharded = std::make_unique<parallel::ShardedModel>(initial.model, *run.dist, world, shard_options(cfg),
                                                         initial.weights);
  run.model = initial.model;  // the checkpoint's mapping goes with `initial`: no longer needed
}

void resume(TrainRun& run, const std::string& resume) {
  if (resume.empty()) return;
  const auto& store = *run.store;
  std::optional<fs::path> from = resume == "auto" ? store.latest() : std::optional<fs::path>(resume);
  if (!from) {
    log::info("--resume auto: no complete checkpoint in {}, starting fresh", store.root().string());
    return;
  }
  run.prog = load_train_state(*from, *run.sharded, *run.opt, *run.data);
  run.result.last_checkpoint = *from;
  log::info("resumed from {} at step {} ({} tokens)", from->string(), run.prog.step, run.prog.tokens);
  if (run.main)
    for (const auto& change : schedule_changes(checkpoint_config_yaml(*from), dump_config(run.cfg), run.prog.step))
      log::warn("{}", change);
  if (auto newest = store.latest(); newest && *newest != *from && resume != "auto")
    log::warn("{} holds a newer checkpoint ({}) than {}: this run's first save moves it to abandoned_{}",
              store.root().string(), newest->filename().string(), from->filename().string(),
              newest->filename().string());
}

}  // namespace

TrainRun build_run(const TrainConfig& config, const TrainOptions& opts) {
  if (!keep_freed_host_memory())
    log::warn("glibc refused the malloc settings that keep freed memory; steps may page-fault more");
  TrainRun run;
  // model.shape is filled from model.init_from (and checked against it): the resolved config and
  // every checkpoint's copy show the architecture trained.
  run.cfg = with_fitted_architecture(resolve_data_config(config));
  const TrainConfig& cfg = run.cfg;
  const auto world = parallel::world_from_env(parallel::process_env());
  if (!world.is_main()) log::set_level(log::Level::Warn);  // one voice: rank 0 reports
  // The rank's device is chosen and made current before anything is allocated on it.
  run.dist = parallel::ProcessGroup::create(
      world, parallel::select_device(cfg.dist.device, "dist.device", world.local_rank), process_group_options(cfg));
  run.main = run.dist->is_main();
  run.store = std::make_unique<CheckpointStore>(
      cfg.checkpoint.dir.empty() ? cfg.output_dir / "checkpoints" : cfg.checkpoint.dir, cfg.checkpoint.keep_last);
  run.lock = lock_output_dir(cfg, *run.store, *run.dist);
  if (run.main) write_resolved_config(cfg.output_dir / "config.yaml", cfg);
  run.config_json = {{"yaml", dump_config(cfg)}, {"tokenizer", cfg.data.tokenizer.string()}};
  if (cfg.train.threads > 0) at::set_num_threads(cfg.train.threads);

  run.data = std::make_unique<Mixture>(mixture_options(cfg));
  // The plan against this machine's memory before any weight is read: a run that cannot fit stops
  // here with the changes that would, not in the allocator after loading the checkpoint.
  LlamaConfig planned = *cfg.model.shape;
  planned.vocab_size = std::max(planned.vocab_size, run.data->max_vocab_size());
  check_memory(cfg, planned, world, *run.dist);
  shard_initial_model(run, world);
  run.opt = std::make_unique<AdamW>(run.sharded->shard_params(), adamw_options(cfg), run.sharded->shard_decay());
  run.sched = lr_schedule(cfg);
  run.batch = step_batch(cfg, run.dist->world_size());
  if (!run.batch.exact)
    fail("global batch of {} sequences is not a multiple of micro_batch_size {} x {} rank(s)", run.batch.sequences,
         cfg.train.micro_batch_size, run.dist->world_size());
  resume(run, opts.resume);
  run.result.start_step = run.prog.step;
  return run;
}

}  // namespace agenttune
