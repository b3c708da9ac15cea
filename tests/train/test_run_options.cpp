// Each component's options come from their keys, in one builder: what the trainer runs with is
// what `agenttune plan` plans for.
#include <gtest/gtest.h>

#include "agenttune/train/run_options.h"

namespace agenttune {
namespace {

TrainConfig config() {
  TrainConfig c;
  c.dist.strategy = parallel::ShardStrategy::HybridShard;
  c.dist.backend = parallel::Backend::Gloo;
  c.dist.timeout_s = 12.5;
  c.dist.connect_timeout_s = 900;
  c.dist.hybrid_group_size = 4;
  c.dist.prefetch = false;
  c.dist.reshard_after_forward = false;
  c.dist.offload = parallel::Offload::Optimizer;
  c.dist.single_rank_path = parallel::SingleRankPath::PerUnit;
  c.model.compute_dtype = c10::ScalarType::BFloat16;
  c.model.activation_checkpointing = Recompute::Selective;
  c.data.seq_len = 512;
  c.train.micro_batch_size = 2;
  c.train.global_batch_sequences = 16;
  return c;
}

TEST(RunOptions, ProcessGroupAndShardOptionsFromDist) {
  const auto pg = process_group_options(config());
  EXPECT_EQ(pg.backend, parallel::Backend::Gloo);
  EXPECT_EQ(pg.timeout, std::chrono::milliseconds(12500));
  EXPECT_EQ(pg.connect_timeout, std::chrono::seconds(900));
  const auto so = shard_options(config());
  EXPECT_EQ(so.strategy, parallel::ShardStrategy::HybridShard);
  EXPECT_EQ(so.compute_dtype, c10::ScalarType::BFloat16);
  EXPECT_EQ(so.hybrid_group_size, 4);
  EXPECT_FALSE(so.prefetch);
  EXPECT_FALSE(so.reshard_after_forward);
  EXPECT_EQ(so.offload, parallel::Offload::Optimizer);
  EXPECT_EQ(so.single_rank_path, parallel::SingleRankPath::PerUnit);
}

TEST(RunOptions, TheGlobalBatchSplitsOverTheRanks) {
  const auto two = step_batch(config(), 2);
  EXPECT_EQ(two.micro_batches, 4);
  EXPECT_EQ(two.sequences, 16);
  EXPECT_TRUE(two.exact);
  const auto three = step_batch(config(), 3);
  EXPECT_FALSE(three.exact);
  EXPECT_EQ(three.micro_batches, 2);
  EXPECT_EQ(step_batch(config(), 16).micro_batches, 1);  // the floor: one micro-batch per rank
}

TEST(RunOptions, ThePlanSeesTheTrainersSettings) {
  LlamaConfig model;
  const auto in = memory_plan_input(config(), model, parallel::ShardStrategy::FullShard, 2, 8);
  EXPECT_EQ(in.strategy, parallel::ShardStrategy::FullShard);  // the strategy compared, not the config's
  EXPECT_EQ(in.world, 2);
  EXPECT_EQ(in.gpus_per_node, 8);
  EXPECT_EQ(in.hybrid_group_size, 4);
  EXPECT_FALSE(in.prefetch);
  EXPECT_FALSE(in.reshard_after_forward);
  EXPECT_EQ(in.compute_dtype, c10::ScalarType::BFloat16);
  EXPECT_EQ(in.recompute, Recompute::Selective);
  EXPECT_EQ(in.seq_len, 512);
  EXPECT_EQ(in.micro_batch, 2);
  EXPECT_EQ(in.grad_accum, 4);
}

}  // namespace
}  // namespace agenttune
