// Device memory per rank under full_shard, measured by the fake device's allocator, against the
// arithmetic of `agenttune plan`: sharding must really divide the masters, grads and optimizer
// state, and the planner must say what a GPU would hold.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <mutex>

#include "agenttune/parallel/memory_plan.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/step.h"
#include "fake_device.h"
#include "random_batch.h"
#include "thread_ranks.h"
#include "tiny_llama.h"

namespace fd = agenttune::testing::fake_device;
using namespace agenttune;
using namespace agenttune::parallel;

namespace {

LlamaConfig shape(bool tied) {
  auto c = agenttune::testing::tiny_llama(1024, 256, 704, 4, 8, 4, 256);
  c.tie_word_embeddings = tied;
  return c;
}
constexpr int64_t kSeq = 128, kMicro = 2;

struct Measured {
  int64_t state = 0;     // live after the step: masters, AdamW moments, resident gathered parameters
  int64_t resident = 0;  // of which gathered compute-dtype parameters (a shard group of one keeps them)
  int64_t peak = 0;      // the step's peak
};

// One optimizer step per rank on its own fake device; the figures of rank 0.
Measured measure(int world, bool tied) {
  Measured m;
  std::mutex mu;
  fd::reset_all();
  agenttune::testing::run_ranks(
      world,
      [&](ProcessGroup& d, const WorldInfo& w) {
        const int dev = d.rank();
        const int64_t before = fd::counters(dev).live_bytes;
        ShardOptions o;
        o.strategy = ShardStrategy::FullShard;
        o.compute_dtype = at::kBFloat16;
        ShardedModel sm(make_llama(shape(tied), 5), d, w, o);  // the model itself stays in host memory
        AdamW opt(sm.shard_params(), {}, sm.shard_decay());
        fd::reset(dev);
        auto g = at::make_generator<at::CPUGeneratorImpl>(11 + d.rank());
        PackedBatch b = agenttune::testing::random_batch(g, shape(tied).vocab_size, kMicro, kSeq);
        StepRequest req;
        req.lr = 1e-3;
        auto step = train_step(sm, opt, {b}, req, d);  // the trainer's step
        EXPECT_TRUE(step.judgement.applied()) << step.judgement.reason;
        step.loss_sum = at::Tensor();
        const auto c = fd::counters(dev);
        if (d.rank() == 0) {
          std::lock_guard<std::mutex> lock(mu);
          m.state = c.live_bytes - before;
          m.peak = c.peak_bytes - before;
          // Gathered parameters are views of the engine's buffers (no padding at these shapes).
          for (const auto& p : sm.model()->parameters()) m.resident += static_cast<int64_t>(p.nbytes());
        }
      },
      std::chrono::seconds(60), [](int r) { return fd::device(r); });
  return m;
}

MemoryPlan plan_for(int world, bool tied) {
  MemoryPlanInput in;
  in.model = shape(tied);
  in.strategy = ShardStrategy::FullShard;
  in.world = world;
  in.gpus_per_node = world;
  in.seq_len = kSeq;
  in.micro_batch = kMicro;
  in.compute_dtype = at::kBFloat16;
  return plan_memory(in);
}

void full_shard_halves_the_state_and_matches_the_plan(bool tied) {
  const Measured one = measure(1, tied), two = measure(2, tied);
  const MemoryPlan p1 = plan_for(1, tied), p2 = plan_for(2, tied);
  std::printf("[ figures  ] %s head\n", tied ? "tied" : "untied");
  // After the step the grads are dropped; a shard group of one keeps its units gathered (bf16).
  const int64_t planned_state1 = p1.master + p1.optimizer + p1.gathered;
  const int64_t planned_state2 = p2.master + p2.optimizer;
  const int64_t sharded1 = one.state - one.resident, sharded2 = two.state - two.resident;
  std::printf("[ figures  ] full_shard, rank 0: masters+optimizer %.2f MB at world 1 (+%.2f MB resident bf16), "
              "%.2f MB at world 2 (+%.2f MB) (ratio %.3f); plan %.2f / %.2f MB with resident\n",
              sharded1 / 1e6, one.resident / 1e6, sharded2 / 1e6, two.resident / 1e6,
              static_cast<double>(sharded2) / sharded1, planned_state1 / 1e6, planned_state2 / 1e6);
  std::printf("[ figures  ] full_shard, rank 0: step peak %.2f MB at world 1, %.2f MB at world 2; plan total %.2f / "
              "%.2f MB (%.1f%% / %.1f%% off)\n",
              one.peak / 1e6, two.peak / 1e6, p1.total() / 1e6, p2.total() / 1e6,
              100.0 * (static_cast<double>(one.peak) / p1.total() - 1), 100.0 * (static_cast<double>(two.peak) / p2.total() - 1));
  for (const MemoryPlan* p : {&p1, &p2})
    std::printf("[ figures  ] plan parts: master %.2f gathered %.2f shard grads %.2f compute grads %.2f flat %.2f "
                "optimizer %.2f activations saved %.2f peak %.2f MB\n",
                p->master / 1e6, p->gathered / 1e6, p->shard_grads / 1e6, p->compute_grads / 1e6, p->grad_flat / 1e6,
                p->optimizer / 1e6, p->activations_saved / 1e6, p->activations_peak / 1e6);
  EXPECT_NEAR(static_cast<double>(sharded2) / sharded1, 0.5, 0.02);
  EXPECT_EQ(two.resident, 0);  // sharded units are freed after use
  EXPECT_EQ(one.resident, p1.gathered);
  EXPECT_NEAR(static_cast<double>(one.state) / planned_state1, 1.0, 0.02);
  EXPECT_NEAR(static_cast<double>(two.state) / planned_state2, 1.0, 0.02);
  EXPECT_NEAR(static_cast<double>(one.peak) / p1.total(), 1.0, 0.10);
  EXPECT_NEAR(static_cast<double>(two.peak) / p2.total(), 1.0, 0.10);
}

TEST(ShardedMemoryOnFakeDevice, FullShardHalvesTheStateAtTwoRanksAndMatchesThePlan) {
  full_shard_halves_the_state_and_matches_the_plan(false);
}

// Tied: the table is one master, one grad, one pair of moments (counted once), gathered for the
// embedding and again for the head (never kept across the layers).
TEST(ShardedMemoryOnFakeDevice, TiedFullShardHalvesTheStateAtTwoRanksAndMatchesThePlan) {
  full_shard_halves_the_state_and_matches_the_plan(true);
}

}  // namespace
