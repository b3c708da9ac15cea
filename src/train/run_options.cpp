#include "agenttune/train/run_options.h"

#include <chrono>

#include "agenttune/train/data_resolution.h"

namespace agenttune {

namespace {

std::chrono::milliseconds milliseconds(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

parallel::ProcessGroupOptions process_group_options(const TrainConfig& cfg) {
  parallel::ProcessGroupOptions o;
  o.backend = cfg.dist.backend;
  o.timeout = milliseconds(cfg.dist.timeout_s);
  o.connect_timeout = milliseconds(cfg.dist.connect_timeout_s);
  return o;
}

parallel::ShardOptions shard_options(const TrainConfig& cfg) {
  parallel::ShardOptions o;
  o.strategy = cfg.dist.strategy;
  o.compute_dtype = cfg.model.compute_dtype;
  o.hybrid_group_size = cfg.dist.hybrid_group_size;
  o.prefetch = cfg.dist.prefetch;
  o.reshard_after_forward = cfg.dist.reshard_after_forward;
  o.offload = cfg.dist.offload;
  o.single_rank_path = cfg.dist.single_rank_path;
  return o;
}

AdamWOptions adamw_options(const TrainConfig& cfg) {
  return {cfg.train.beta1, cfg.train.beta2, cfg.train.eps, cfg.train.weight_decay};
}

LrSchedule lr_schedule(const TrainConfig& cfg) {
  return {cfg.train.lr,    cfg.train.warmup_steps, cfg.train.max_steps, cfg.train.decay, cfg.train.min_lr_ratio,
          cfg.train.warmup_start_ratio};
}

StepBatch step_batch(const TrainConfig& cfg, int world) {
  const int64_t seqs = global_batch_sequences(cfg);
  const int64_t per_micro = cfg.train.micro_batch_size * world;
  return {std::max<int64_t>(1, seqs / per_micro), seqs, seqs % per_micro == 0};
}

parallel::MemoryPlanInput memory_plan_input(const TrainConfig& cfg, const LlamaConfig& model,
                                            parallel::ShardStrategy strategy, int world, int gpus_per_node) {
  const parallel::ShardOptions so = shard_options(cfg);
  parallel::MemoryPlanInput in;
  in.model = model;
  in.strategy = strategy;
  in.world = world;
  in.gpus_per_node = gpus_per_node;
  in.hybrid_group_size = so.hybrid_group_size;
  in.prefetch = so.prefetch;
  in.reshard_after_forward = so.reshard_after_forward;
  in.offload = so.offload;
  in.single_rank_path = so.single_rank_path;
  in.compute_dtype = so.compute_dtype;
  in.seq_len = cfg.data.seq_len;
  in.micro_batch = cfg.train.micro_batch_size;
  in.recompute = cfg.model.activation_checkpointing;
  in.adapter = cfg.model.adapter;
  in.grad_accum = step_batch(cfg, world).micro_batches;
  return in;
}

}  // namespace agenttune
