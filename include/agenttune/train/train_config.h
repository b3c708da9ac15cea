#pragma once
// `agenttune train --config FILE`: continued pretraining and SFT (prepared conversations with
// their loss masks) of a Llama model. validate() checks each key as the file loads; the data keys
// are resolved (train/data_resolution.h) and the architecture fitted (train/model_fit.h) when the
// run starts, and each component's options are built from these sections in one place
// (train/run_options.h, mixture_options, bad_step_options, checkpoint_schedule_options).
// Keys the outside world relies on: output_dir, train.max_steps, train.seed, checkpoint.interval.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/data/mixture.h"
#include "agenttune/data/sft_mix.h"
#include "agenttune/eval/eval_config.h"
#include "agenttune/model/adapter.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/model/recompute.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/lr_schedule.h"

namespace agenttune {

// What a non-finite step (or a loss spike, when train.spike_zscore is set) does: skip its update,
// roll back to the last good checkpoint and skip the data that led there (at most
// train.max_rollbacks times to one checkpoint), or stop at once. Either way the run stops after
// train.max_nonfinite_in_a_row bad steps in a row, and no checkpoint is written during a streak
// (train/bad_step.h, train/checkpoint_schedule.h).
enum class NonfiniteAction { Skip, Rollback, Stop };

template <>
struct EnumNames<NonfiniteAction> {
  static constexpr std::array<std::pair<NonfiniteAction, std::string_view>, 3> values = {
      {{NonfiniteAction::Skip, "skip"}, {NonfiniteAction::Rollback, "rollback"}, {NonfiniteAction::Stop, "stop"}}};
};

// What `train` does when the memory plan of its configuration does not fit the device's free
// memory (or the host's, for offloaded state and CPU runs), checked before any weight is read
// (train/memory_check.h): refuse (exit 2, the plan and the changes that would fit), warn and go
// on, or not check.
enum class MemoryCheck { Error, Warn, Off };

template <>
struct EnumNames<MemoryCheck> {
  static constexpr std::array<std::pair<MemoryCheck, std::string_view>, 3> values = {
      {{MemoryCheck::Error, "error"}, {MemoryCheck::Warn, "warn"}, {MemoryCheck::Off, "off"}}};
};

struct ModelSection {
  // A Hugging Face or Meta folder to continue from; empty = a fresh model of `shape`.
  std::filesystem::path init_from;
  // Required without init_from; with it, optional and then it must equal the folder's
  // architecture (a shape that lost silently to the checkpoint's was issue 22). A resolved config
  // always carries the architecture the run trains (train/model_fit.h).
  std::optional<LlamaConfig> shape;
  uint64_t init_seed = 0;
  Recompute activation_checkpointing = Recompute::None;
  // Forward and backward run in this dtype: the engine casts the gathered fp32 master shards to it
  // (no autocast); the optimizer and checkpoints stay fp32.
  c10::ScalarType compute_dtype = c10::ScalarType::Float;
  // LoRA: the base (init_from or init_seed) frozen in the compute dtype, only the adapters trained
  // (fp32 masters, AdamW); checkpoints hold the adapters and record which base they belong to.
  AdapterConfig adapter;
};

struct DataSection {
  std::vector<MixtureSource> sources;
  // What sources[].weight counts: trained tokens (the mixture's own unit) or samples (documents,
  // i.e. conversations for SFT data; converted with each source's trained tokens per sample).
  ShareUnit weight_unit = ShareUnit::TrainedTokens;
  // AgentTuning's eta: sources with agent: true get this share (in weight_unit) and the others the
  // rest, each group split by its sources' sizes. Exclusive with explicit weights.
  std::optional<double> agent_share;
  int64_t seq_len = 2048;
  AttentionMode attention = AttentionMode::Causal;
  Packing packing = Packing::Pack;  // pack | pad (one document per sequence; see data/mixture.h)
  // A conversation (SFT source) longer than seq_len: truncate | drop | window (data/overlength.h).
  // Conversations are never split across rows; counts are logged at startup.
  Overlength overlength = Overlength::Truncate;
  double validation_fraction = 0.0;
  // The SentencePiece model the shards must have been made with (checked by fingerprint).
  std::filesystem::path tokenizer;
};

struct TrainSection {
  int64_t max_steps = 1000;
  // > 0: train this many passes over the data instead of max_steps (Agent-FLAN: 1, Lemur-Chat: 2).
  // A pass is every source's tokens once (packed) or every document once (padded), in all.
  double epochs = 0;
  uint64_t seed = 0;
  int64_t micro_batch_size = 1;         // sequences per forward/backward on one rank
  int64_t global_batch_sequences = 0;   // per optimizer step, all ranks; or:
  int64_t global_batch_tokens = 0;      // (rounded to whole sequences; exactly one of the two)
  double lr = 3e-4;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 0;
  double warmup_start_ratio = 0.0;  // warmup starts at lr * this (0 = from zero)
  LrDecay decay = LrDecay::Cosine;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double clip_grad_norm = 1.0;  // 0 = no clipping
  int64_t max_nonfinite_in_a_row = 5;  // bad steps in a row that stop the run
  int64_t max_rollbacks = 5;           // train.on_nonfinite: rollback: rollbacks to one checkpoint before stopping
  NonfiniteAction on_nonfinite = NonfiniteAction::Skip;
  // > 0: a step whose loss lies this many standard deviations above the mean of the last
  // spike_window accepted steps counts as non-finite (llm.c's outlier detector); 0 = off.
  double spike_zscore = 0;
  int64_t spike_window = 128;
  int64_t log_interval = 1;
  // Every this many steps: the validation loss (with data.validation_fraction) and the `eval:`
  // section's tasks, on the current weights; 0 = never.
  int64_t eval_interval = 0;
  int64_t eval_batches = 4;
  int threads = 0;  // intra-op threads; 0 = LibTorch's default
  MemoryCheck memory_check = MemoryCheck::Error;
};

struct CheckpointSection {
  int64_t interval = 1000;  // steps; a checkpoint is also written at the end and on SIGTERM/SIGINT
  int keep_last = 3;
  std::filesystem::path dir;  // default: <output_dir>/checkpoints
};

struct MetricsSection {
  bool tensorboard = true;
  // The device's dense bf16 peak in TFLOP/s, for MFU; 0 = from the built-in table by device name
  // (MFU is null when neither gives one, as on CPU).
  double peak_tflops = 0;
  // Count the host syncs of each training step with CUDA's sync debug mode and write them as
  // `host_syncs` (a GPU diagnostic: agenttune's step has one, reading the loss; an error on the CPU).
  bool host_syncs = false;
  // Time each step's phases (data, forward, backward, reduce, optimizer, other), write them as
  // phase_<name>_seconds and print a table at the end. Each phase ends by draining the device, so
  // a profiled step loses the overlap of a real one: a diagnostic, not a speed setting.
  bool phase_times = false;
};

// What the sharded model and the process group run with (train/run_options.h builds their
// options from it: a new key goes here, in visit() and in that builder).
struct DistSection {
  // full_shard (ZeRO-3/FSDP) | shard_grad_op (ZeRO-2) | no_shard (DDP) | hybrid_shard
  parallel::ShardStrategy strategy = parallel::ShardStrategy::FullShard;
  parallel::Backend backend = parallel::Backend::Auto;  // auto = NCCL on CUDA, Gloo on CPU
  std::string device = "auto";   // auto = cuda:<local_rank> when CUDA is available, else cpu
  double timeout_s = 600;        // a collective slower than this fails on every rank
  // How long ranks wait for each other to join (the store and the startup barrier), counted after
  // model loading; a slow node start on a big allocation needs more than a collective does.
  double connect_timeout_s = 300;
  int hybrid_group_size = 0;     // ranks that shard together under hybrid_shard; 0 = one node
  bool prefetch = true;          // overlap collectives with compute (bit-identical results either way)
  // full_shard / hybrid_shard: free gathered parameters after each unit's forward and gather them
  // again for its backward (less memory); false keeps them until the unit's backward (one all-gather
  // per micro-batch instead of two). Bit-identical results either way.
  bool reshard_after_forward = true;
  // none | optimizer: fp32 masters and AdamW moments in host memory, AdamW on the host, the
  // device keeping compute-dtype parameters (a 7B full fine-tune on one 80 GB GPU).
  parallel::Offload offload = parallel::Offload::None;
  // resident | per_unit: what a shard group of one does under full_shard / hybrid_shard (per_unit:
  // gather, free and reduce-scatter each unit through the backend, as a larger group does).
  parallel::SingleRankPath single_rank_path = parallel::SingleRankPath::Resident;
};

struct TrainConfig {
  std::filesystem::path output_dir;
  ModelSection model;
  DataSection data;
  TrainSection train;
  CheckpointSection checkpoint;
  MetricsSection metrics;
  DistSection dist;
  // Agent metrics at train.eval_interval (eval/eval_config.h; the same keys as `agenttune eval`'s
  // config), each rank decoding its share, written by rank 0 as eval/<task>/<metric>.
  std::optional<::agenttune::eval::EvalConfig> eval;

  void validate(const std::string& source) const;
};

template <class V>
void visit(V& v, ModelSection& m) {
  v("init_from", m.init_from);
  v("shape", m.shape);
  v("init_seed", m.init_seed);
  v("activation_checkpointing", m.activation_checkpointing);
  v("compute_dtype", m.compute_dtype);
  v("adapter", m.adapter);
}

template <class V>
void visit(V& v, DataSection& d) {
  v("sources", d.sources);
  v("weight_unit", d.weight_unit);
  v("agent_share", d.agent_share);
  v("seq_len", d.seq_len);
  v("attention", d.attention);
  v("packing", d.packing);
  v("overlength", d.overlength);
  v("validation_fraction", d.validation_fraction);
  v("tokenizer", d.tokenizer);
}

template <class V>
void visit(V& v, TrainSection& t) {
  v("max_steps", t.max_steps);
  v("epochs", t.epochs);
  v("seed", t.seed);
  v("micro_batch_size", t.micro_batch_size);
  v("global_batch_sequences", t.global_batch_sequences);
  v("global_batch_tokens", t.global_batch_tokens);
  v("lr", t.lr);
  v("min_lr_ratio", t.min_lr_ratio);
  v("warmup_steps", t.warmup_steps);
  v("warmup_start_ratio", t.warmup_start_ratio);
  v("decay", t.decay);
  v("beta1", t.beta1);
  v("beta2", t.beta2);
  v("eps", t.eps);
  v("weight_decay", t.weight_decay);
  v("clip_grad_norm", t.clip_grad_norm);
  v("max_nonfinite_in_a_row", t.max_nonfinite_in_a_row);
  v("max_rollbacks", t.max_rollbacks);
  v("on_nonfinite", t.on_nonfinite);
  v("spike_zscore", t.spike_zscore);
  v("spike_window", t.spike_window);
  v("log_interval", t.log_interval);
  v("eval_interval", t.eval_interval);
  v("eval_batches", t.eval_batches);
  v("threads", t.threads);
  v("memory_check", t.memory_check);
}

template <class V>
void visit(V& v, CheckpointSection& c) {
  v("interval", c.interval);
  v("keep_last", c.keep_last);
  v("dir", c.dir);
}

template <class V>
void visit(V& v, MetricsSection& m) {
  v("tensorboard", m.tensorboard);
  v("peak_tflops", m.peak_tflops);
  v("host_syncs", m.host_syncs);
  v("phase_times", m.phase_times);
}

template <class V>
void visit(V& v, DistSection& d) {
  v("strategy", d.strategy);
  v("backend", d.backend);
  v("device", d.device);
  v("timeout_s", d.timeout_s);
  v("connect_timeout_s", d.connect_timeout_s);
  v("hybrid_group_size", d.hybrid_group_size);
  v("prefetch", d.prefetch);
  v("reshard_after_forward", d.reshard_after_forward);
  v("offload", d.offload);
  v("single_rank_path", d.single_rank_path);
}

template <class V>
void visit(V& v, TrainConfig& c) {
  v("output_dir", c.output_dir);
  v.section("model", c.model);
  v.section("data", c.data);
  v.section("train", c.train);
  v.section("checkpoint", c.checkpoint);
  v.section("metrics", c.metrics);
  v.section("dist", c.dist);
  v("eval", c.eval);
}

}  // namespace agenttune
