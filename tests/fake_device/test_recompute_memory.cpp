// Each recompute mode (model.activation_checkpointing) measured on the fake device's allocator
// against `agenttune plan`: the trainer's step, its peak per mode within 10 % of the plan's total.
// (The per-mode layer bytes themselves are checked exactly on the CPU allocator in tests/plan.)
// Not modelled by the plan: a layer's backward working set (its grads and temporaries while it
// runs), which puts full's real peak in backward, a few % above the plan at this shape.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <mutex>

#include "agenttune/model/loss.h"
#include "agenttune/parallel/memory_plan.h"
#include "agenttune/parallel/sharded_model.h"
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

LlamaConfig shape() { return agenttune::testing::tiny_llama(1024, 256, 704, 4, 8, 4, 256); }
constexpr int64_t kSeq = 256, kMicro = 2;

// The step's peak on the device above what the model and optimizer hold before it.
int64_t measured_peak(Recompute mode) {
  int64_t peak = 0;
  fd::reset_all();
  agenttune::testing::run_ranks(
      1,
      [&](ProcessGroup& d, const WorldInfo& w) {
        const int64_t before = fd::counters(0).live_bytes;
        ShardOptions o;
        o.strategy = ShardStrategy::FullShard;
        o.compute_dtype = at::kBFloat16;
        auto model = make_llama(shape(), 5);
        model->recompute = mode;
        ShardedModel sm(model, d, w, o);
        AdamW opt(sm.shard_params(), {}, sm.shard_decay());
        fd::reset(0);
        auto g = at::make_generator<at::CPUGeneratorImpl>(11);
        PackedBatch b = agenttune::testing::random_batch(g, shape().vocab_size, kMicro, kSeq);
        StepRequest req;
        req.lr = 1e-3;
        auto step = train_step(sm, opt, {b}, req, d);
        EXPECT_TRUE(step.judgement.applied()) << step.judgement.reason;
        peak = fd::counters(0).peak_bytes - before;
      },
      std::chrono::seconds(120), [](int r) { return fd::device(r); });
  return peak;
}

MemoryPlan plan_for(Recompute mode) {
  MemoryPlanInput in;
  in.model = shape();
  in.strategy = ShardStrategy::FullShard;
  in.world = 1;
  in.gpus_per_node = 1;
  in.seq_len = kSeq;
  in.micro_batch = kMicro;
  in.compute_dtype = at::kBFloat16;
  in.recompute = mode;
  return plan_memory(in);
}

TEST(RecomputeMemoryOnFakeDevice, EachModesPeakMatchesThePlan) {
  std::map<Recompute, int64_t> peak, planned;
  for (Recompute mode : {Recompute::None, Recompute::Selective, Recompute::Full}) {
    peak[mode] = measured_peak(mode);
    const auto p = plan_for(mode);
    planned[mode] = p.total();
    std::printf("[ figures  ] recompute %-9s: step peak %.2f MB, plan %.2f MB (%+.1f%%); plan activations saved "
                "%.2f MB, peak %.2f MB, one layer %.2f MB\n",
                enum_name(mode).c_str(), peak[mode] / 1e6, p.total() / 1e6,
                100.0 * (static_cast<double>(peak[mode]) / p.total() - 1), p.activations_saved / 1e6,
                p.activations_peak / 1e6, p.layer_full / 1e6);
    EXPECT_NEAR(static_cast<double>(peak[mode]) / p.total(), 1.0, 0.10) << enum_name(mode);
  }
  // Each mode really frees memory: selective below none, full below selective.
  EXPECT_LT(peak[Recompute::Selective], peak[Recompute::None]);
  EXPECT_LT(peak[Recompute::Full], peak[Recompute::Selective]);
}

}  // namespace

