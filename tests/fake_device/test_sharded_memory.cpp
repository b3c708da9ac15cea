// Device memory per rank under full_shard, measured by the fake device's allocator, against the
// arithmetic of `agenttune plan`: sharding must really divide the masters, grads and optimizer
// state, and the planner must say what a GPU would hold.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <mutex>

#include "agenttune/dist/memory_plan.h"
#include "agenttune/dist/sharded_model.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/optimizer.h"
#include "fake_device.h"
#include "thread_ranks.h"

namespace fd = agenttune::testing::fake_device;
using namespace agenttune;
using namespace agenttune::dist;

namespace {

LlamaConfig shape() {
  LlamaConfig c;
  c.vocab_size = 1024, c.hidden_size = 256, c.intermediate_size = 704, c.num_hidden_layers = 4;
  c.num_attention_heads = 8, c.num_key_value_heads = 4, c.max_position_embeddings = 256;
  return c;
}
constexpr int64_t kSeq = 128, kMicro = 2;

struct Measured {
  int64_t state = 0;  // live after the step: masters, their grads, AdamW moments (+ nothing else)
  int64_t peak = 0;   // the step's peak
};

// One optimizer step per rank on its own fake device; the figures of rank 0.
Measured measure(int world) {
  Measured m;
  std::mutex mu;
  fd::reset_all();
  agenttune::testing::run_ranks(
      world,
      [&](Dist& d, const WorldInfo& w) {
        const int dev = d.rank();
        const int64_t before = fd::counters(dev).live_bytes;
        ShardOptions o;
        o.strategy = ShardStrategy::FullShard;
        o.compute_dtype = at::kBFloat16;
        ShardedModel sm(make_llama(shape(), 5), d, w, o);  // the model itself stays in host memory
        AdamW opt(sm.shard_params(), {}, sm.shard_decay());
        fd::reset(dev);
        auto g = at::make_generator<at::CPUGeneratorImpl>(11 + d.rank());
        auto tokens = at::randint(0, shape().vocab_size, {kMicro, kSeq}, g, at::kLong);
        auto positions = at::arange(kSeq, at::kLong).expand({kMicro, kSeq}).contiguous();
        auto targets = labels_to_targets(tokens).to(d.device());
        auto sum = cross_entropy_sum(sm.forward(tokens.to(d.device()), positions.to(d.device()), {}), targets);
        sum.backward();
        sm.finish_backward();
        sm.clip_grad_norm_on_device(1.0);
        opt.step(1e-3);
        sm.after_optimizer_step();
        sum = at::Tensor();
        targets = at::Tensor();
        const auto c = fd::counters(dev);
        if (d.rank() == 0) {
          std::lock_guard<std::mutex> lock(mu);
          m.state = c.live_bytes - before;
          m.peak = c.peak_bytes - before;
        }
      },
      std::chrono::seconds(60), [](int r) { return fd::device(r); });
  return m;
}

MemoryPlan plan_for(int world) {
  MemoryPlanInput in;
  in.model = shape();
  in.strategy = ShardStrategy::FullShard;
  in.world = world;
  in.gpus_per_node = world;
  in.seq_len = kSeq;
  in.micro_batch = kMicro;
  in.compute_dtype = at::kBFloat16;
  return plan_memory(in);
}

TEST(ShardedMemoryOnFakeDevice, FullShardHalvesTheStateAtTwoRanksAndMatchesThePlan) {
  const Measured one = measure(1), two = measure(2);
  const MemoryPlan p1 = plan_for(1), p2 = plan_for(2);
  const int64_t planned_state1 = p1.master + p1.shard_grads + p1.optimizer;
  const int64_t planned_state2 = p2.master + p2.shard_grads + p2.optimizer;
  std::printf("[ figures  ] full_shard, rank 0: params+grads+optimizer %.2f MB at world 1, %.2f MB at world 2 "
              "(ratio %.3f); plan %.2f / %.2f MB\n",
              one.state / 1e6, two.state / 1e6, static_cast<double>(two.state) / one.state, planned_state1 / 1e6,
              planned_state2 / 1e6);
  std::printf("[ figures  ] full_shard, rank 0: step peak %.2f MB at world 1, %.2f MB at world 2; plan total %.2f / "
              "%.2f MB (%.1f%% / %.1f%% off)\n",
              one.peak / 1e6, two.peak / 1e6, p1.total() / 1e6, p2.total() / 1e6,
              100.0 * (static_cast<double>(one.peak) / p1.total() - 1), 100.0 * (static_cast<double>(two.peak) / p2.total() - 1));
  EXPECT_NEAR(static_cast<double>(two.state) / one.state, 0.5, 0.02);
  EXPECT_NEAR(static_cast<double>(one.state) / planned_state1, 1.0, 0.02);
  EXPECT_NEAR(static_cast<double>(two.state) / planned_state2, 1.0, 0.02);
  EXPECT_NEAR(static_cast<double>(one.peak) / p1.total(), 1.0, 0.10);
  EXPECT_NEAR(static_cast<double>(two.peak) / p2.total(), 1.0, 0.10);
}

}  // namespace
