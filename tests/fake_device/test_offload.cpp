// dist.offload: optimizer on the fake device: fp32 masters and AdamW moments in host memory, the
// device holding compute-dtype weights. The update is the same arithmetic on the same values as
// without offload, so losses, checkpoints and resumed runs are bit-identical to the resident run;
// the device's bytes are the planner's; the step still has one host sync.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <mutex>

#include "../cli/cli_test_util.h"
#include "agenttune/config/load.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/memory_plan.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/step.h"
#include "agenttune/train/trainer.h"
#include "fake_device.h"
#include "random_batch.h"
#include "thread_ranks.h"
#include "tiny_llama.h"

namespace fd = agenttune::testing::fake_device;
namespace fs = std::filesystem;
using namespace agenttune;
using namespace agenttune::parallel;
using agenttune::testing::TinyRun;

namespace {

TrainResult train_on_fake(const fs::path& root, const TinyRun& r, std::vector<std::string> overrides,
                          int64_t exit_after = 0, const std::string& resume = "") {
  agenttune::testing::write_tiny_run(root, r);
  overrides.push_back("dist.device=fake");
  auto cfg = load_config<TrainConfig>(root / "train.yaml", overrides);
  TrainOptions o;
  o.progress = false;
  o.exit_after_steps = exit_after;
  o.resume = resume;
  return train(cfg, o);
}

std::vector<double> metric(const fs::path& run, const std::string& key) {
  std::vector<double> out;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains(key)) out.push_back(j[key].get<double>());
  }
  return out;
}

void expect_same_checkpoint(const fs::path& a, const fs::path& b) {
  auto fa = SafetensorsFile::open(a / "rank_00000.safetensors");
  auto fb = SafetensorsFile::open(b / "rank_00000.safetensors");
  ASSERT_EQ(fa.entries().size(), fb.entries().size());
  for (const auto& e : fa.entries()) EXPECT_TRUE(at::equal(fa.tensor(e.name), fb.tensor(e.name))) << e.name;
}

class OffloadTrain : public ::testing::TestWithParam<std::string> {};

// Ten steps of 4 micro-batches through train(): the offloaded run's losses, grad norms and final
// checkpoint are the resident run's, bit for bit, and each offloaded step syncs the host once.
TEST_P(OffloadTrain, LossesAndCheckpointsBitIdenticalToResidentWithOneHostSyncPerStep) {
  const auto root = agenttune::testing::scratch_dir();
  TinyRun r;
  r.max_steps = 10;
  r.micro_batch = 2;  // 4 micro-batches per step
  r.checkpoint = "{interval: 1000}";
  const std::vector<std::string> common = {"model.compute_dtype=" + GetParam(), "metrics.host_syncs=true",
                                           "train.clip_grad_norm=0.5"};  // the clip acts on most steps
  auto resident = train_on_fake(root / "resident", r, common);
  auto with_offload = common;
  with_offload.push_back("dist.offload=optimizer");
  fd::reset(0);
  auto offloaded = train_on_fake(root / "offload", r, with_offload);
  // Each step's fp32 grads came to the host (4 bytes for each of the model's ~0.6 M parameters).
  EXPECT_GT(fd::counters(0).d2h_bytes, 10 * 4 * 500'000);
  ASSERT_EQ(resident.losses.size(), 10u);
  EXPECT_EQ(offloaded.losses, resident.losses);
  EXPECT_EQ(metric(root / "offload/run", "grad_norm"), metric(root / "resident/run", "grad_norm"));
  expect_same_checkpoint(resident.last_checkpoint, offloaded.last_checkpoint);
  auto syncs = metric(root / "offload/run", "host_syncs");
  ASSERT_EQ(syncs.size(), 10u);
  for (double s : syncs) EXPECT_EQ(s, 1.0);
}

INSTANTIATE_TEST_SUITE_P(ComputeDtypes, OffloadTrain, ::testing::Values("bf16", "fp32"));

// Checkpointed after 5 steps, resumed for the other 5: the losses and weights of the whole run.
TEST(OffloadOnFakeDevice, InterruptedAndResumedEqualsUninterrupted) {
  const auto root = agenttune::testing::scratch_dir();
  TinyRun r;
  r.max_steps = 10;
  r.checkpoint = "{interval: 1000}";
  const std::vector<std::string> o = {"model.compute_dtype=bf16", "dist.offload=optimizer"};
  auto whole = train_on_fake(root / "whole", r, o);
  auto first = train_on_fake(root / "parts", r, o, 5);
  ASSERT_EQ(first.final_step, 5);
  auto second = train_on_fake(root / "parts", r, o, 0, "auto");
  ASSERT_EQ(second.start_step, 5);
  auto losses = first.losses;
  losses.insert(losses.end(), second.losses.begin(), second.losses.end());
  EXPECT_EQ(losses, whole.losses);
  expect_same_checkpoint(whole.last_checkpoint, second.last_checkpoint);
}

// ---- the engine directly, on one fake device per rank ----

LlamaConfig shape() { return agenttune::testing::tiny_llama(1024, 256, 704, 4, 8, 4, 256); }
constexpr int64_t kSeq = 128, kMicro = 2;

struct Run {
  std::vector<double> losses;
  std::vector<at::Tensor> shards;  // rank 0's final fp32 masters
  int64_t state = 0, peak = 0;     // rank 0's device bytes: after the last step, and the steps' peak
  double syncs_per_step = 0;
  bool masters_on_host = false;
};

// `steps` steps of two micro-batches per rank under full_shard in bf16, the second one skipped.
Run run_steps(int world, Offload offload, SingleRankPath path, int steps) {
  Run out;
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
        o.offload = offload;
        o.single_rank_path = path;
        ShardedModel sm(make_llama(shape(), 5), d, w, o);
        AdamW opt(sm.shard_params(), {}, sm.shard_decay());
        fd::reset(dev);
        auto g = at::make_generator<at::CPUGeneratorImpl>(11 + d.rank());
        std::vector<double> losses;
        for (int s = 0; s < steps; ++s) {
          std::vector<PackedBatch> batches;
          for (int m = 0; m < 2; ++m) {
            batches.push_back(agenttune::testing::random_batch(g, shape().vocab_size, kMicro, kSeq));
          }
          StepRequest req;
          req.lr = 1e-3;
          req.clip_grad_norm = 0.5;
          // The second step is judged a loss spike and skipped: its clip must not leak into the next.
          if (s == 1) req.judge = [](const StepOutcome&) { return StepJudgement{StepVerdict::LossSpike, "test"}; };
          auto step = train_step(sm, opt, batches, req, d);
          EXPECT_EQ(step.judgement.applied(), s != 1) << step.judgement.reason;
          losses.push_back(step.loss);
        }
        const auto c = fd::counters(dev);
        if (d.rank() == 0) {
          std::lock_guard<std::mutex> lock(mu);
          out.losses = losses;
          out.state = c.live_bytes - before;
          out.peak = c.peak_bytes - before;
          out.syncs_per_step = static_cast<double>(c.host_syncs) / steps;
          out.masters_on_host = true;
          for (auto& [name, t] : sm.shard_params()) {
            out.masters_on_host = out.masters_on_host && t.is_cpu();
            out.shards.push_back(t.detach().to(at::kCPU).clone());
          }
        }
      },
      std::chrono::seconds(120), [](int r) { return fd::device(r); });
  return out;
}

MemoryPlan plan_for(int world, Offload offload, SingleRankPath path) {
  MemoryPlanInput in;
  in.model = shape();
  in.strategy = ShardStrategy::FullShard;
  in.world = world;
  in.gpus_per_node = world;
  in.compute_dtype = at::kBFloat16;
  in.seq_len = kSeq;
  in.micro_batch = kMicro;
  in.grad_accum = 2;
  in.offload = offload;
  in.single_rank_path = path;
  return plan_memory(in);
}

// The per-unit path (2 ranks, and 1 with dist.single_rank_path per_unit) and the resident one (1
// rank): the same losses and masters as without offload, the masters on the host, no more host
// syncs, and the device bytes the plan gives.
TEST(OffloadOnFakeDevice, EngineMatchesResidentAndThePlanAtOneAndTwoRanks) {
  for (auto [world, path] : {std::pair{1, SingleRankPath::Resident}, std::pair{1, SingleRankPath::PerUnit},
                             std::pair{2, SingleRankPath::Resident}}) {
    const std::string label = world > 1 ? "per-unit" : enum_name(path);
    auto none = run_steps(world, Offload::None, path, 3);
    auto off = run_steps(world, Offload::Optimizer, path, 3);
    EXPECT_EQ(off.losses, none.losses) << "world " << world;
    ASSERT_EQ(off.shards.size(), none.shards.size());
    for (size_t i = 0; i < off.shards.size(); ++i) EXPECT_TRUE(at::equal(off.shards[i], none.shards[i])) << i;
    EXPECT_TRUE(off.masters_on_host);
    EXPECT_FALSE(none.masters_on_host);
    EXPECT_EQ(off.syncs_per_step, none.syncs_per_step) << "offload added host syncs";
    const auto plan = plan_for(world, Offload::Optimizer, path), plan_none = plan_for(world, Offload::None, path);
    std::printf("[ figures  ] world %d %s, rank 0 device bytes: offload peak %.2f MB (plan %.2f, %+.1f %%), kept %.2f "
                "MB; without offload peak %.2f MB (plan %.2f), kept %.2f MB; host syncs/step %.2f\n",
                world, label.c_str(), off.peak / 1e6, plan.total() / 1e6, 100.0 * (static_cast<double>(off.peak) / plan.total() - 1),
                off.state / 1e6, none.peak / 1e6, plan_none.total() / 1e6, none.state / 1e6, off.syncs_per_step);
    std::printf("[ figures  ]   plan with offload (MB): shard_copy %.2f gathered %.2f shard_grads %.2f grad_flat %.2f "
                "compute_grads %.2f activations saved %.2f peak %.2f; forward peak %.2f backward peak %.2f; host %.2f\n",
                plan.shard_copy / 1e6, plan.gathered / 1e6, plan.shard_grads / 1e6, plan.grad_flat / 1e6,
                plan.compute_grads / 1e6, plan.activations_saved / 1e6, plan.activations_peak / 1e6,
                plan.forward_peak / 1e6, plan.backward_peak / 1e6, plan.host / 1e6);
    EXPECT_NEAR(static_cast<double>(off.peak) / plan.total(), 1.0, 0.10) << "world " << world << " " << label;
    // What leaves the device: the fp32 masters and both AdamW moments (12 bytes per sharded parameter).
    EXPECT_LT(off.state, none.state);
  }
}

}  // namespace
