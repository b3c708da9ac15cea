// The training step on an accelerator, without one: train() in this process on the fake device,
// counting what a GPU makes expensive. A run that mixed host and device tensors anywhere (data,
// masks, evaluation, the loss, clipping, the optimizer) fails here with CUDA's error.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "../cli/cli_test_util.h"
#include "agenttune/config/load.h"
#include "agenttune/train/trainer.h"
#include "fake_device.h"

namespace fd = agenttune::testing::fake_device;
namespace fs = std::filesystem;
using namespace agenttune;
using namespace agenttune::testing;

namespace {

struct Counted {
  fd::Counters c;
  TrainResult result;
};

Counted train_on_fake(const fs::path& root, const TinyRun& r, std::vector<std::string> overrides) {
  write_tiny_run(root, r);
  overrides.push_back("dist.device=fake");
  auto cfg = load_config<TrainConfig>(root / "train.yaml", overrides);
  fd::reset(0);
  TrainOptions o;
  o.progress = false;
  Counted out;
  out.result = train(cfg, o);
  out.c = fd::counters(0);
  return out;
}

// Per optimizer step, from two runs that differ only in their number of steps: setup, the final
// checkpoint and the teardown cancel out.
struct PerStep {
  double syncs, h2d_bytes;
};

PerStep per_step(const fs::path& root, TinyRun r, const std::vector<std::string>& overrides) {
  r.checkpoint = "{interval: 1000}";
  r.max_steps = 2;
  auto a = train_on_fake(root / "short", r, overrides);
  r.max_steps = 6;
  auto b = train_on_fake(root / "long", r, overrides);
  EXPECT_EQ(a.result.losses, std::vector<double>(b.result.losses.begin(), b.result.losses.begin() + 2))
      << "the first two steps must not depend on the run length";
  return {(b.c.host_syncs - a.c.host_syncs) / 4.0, (b.c.h2d_bytes - a.c.h2d_bytes) / 4.0};
}

TEST(TrainOnFakeDevice, OneHostSyncPerStepWhateverTheMicroBatchingAndOnlyTheBatchUploaded) {
  const auto root = scratch_dir();
  TinyRun r;
  const std::vector<std::string> doc = {"data.attention=document", "model.compute_dtype=bf16",
                                        "model.activation_checkpointing=full"};
  r.micro_batch = 2;  // 4 micro-batches per step
  auto four = per_step(root / "mb4", r, doc);
  r.micro_batch = 8;  // 1 micro-batch
  auto one = per_step(root / "mb1", r, doc);
  // Token ids, positions, targets and document ids, int64, for the step's 8 x 64 tokens.
  const double batch_bytes = 8.0 * 64 * 8 * 4;
  std::printf("[ figures  ] host syncs per optimizer step: %.2f with 1 micro-batch, %.2f with 4\n", one.syncs,
              four.syncs);
  std::printf("[ figures  ] host->device bytes per step: %.0f with 1 micro-batch, %.0f with 4 (the batch: %.0f)\n",
              one.h2d_bytes, four.h2d_bytes, batch_bytes);
  EXPECT_EQ(one.syncs, four.syncs);
  EXPECT_LE(four.syncs, 2.0);
  for (double b : {one.h2d_bytes, four.h2d_bytes}) {
    EXPECT_GE(b, batch_bytes);
    EXPECT_LE(b, batch_bytes * 1.02 + 64) << "parameters or masks are uploaded each step";
  }
}

TEST(TrainOnFakeDevice, EvaluationPaddingAndCheckpointsRunOnTheDevice) {
  const auto root = scratch_dir();
  TinyRun r;
  r.max_steps = 4;
  r.checkpoint = "{interval: 2}";
  auto run = train_on_fake(root, r,
                           {"data.attention=document", "data.packing=pad", "data.validation_fraction=0.1",
                            "train.eval_interval=2", "model.compute_dtype=bf16", "model.activation_checkpointing=full"});
  ASSERT_EQ(run.result.losses.size(), 4u);
  for (double l : run.result.losses) EXPECT_TRUE(std::isfinite(l));
  std::ifstream in(root / "run" / "metrics.jsonl");
  std::string line;
  int evals = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("val_loss")) {
      ++evals;
      EXPECT_TRUE(j["val_loss"].is_number()) << line;
    }
  }
  EXPECT_EQ(evals, 2);
  EXPECT_FALSE(run.result.last_checkpoint.empty());
}

// metrics.host_syncs: the count CUDA's sync debug mode gives for each step, written per step. The
// fake device reports through the same switch, so this is the GPU's count of the same code.
TEST(TrainOnFakeDevice, HostSyncsMetricIsTheSyncDebugCountOfEachStep) {
  const auto root = scratch_dir();
  TinyRun r;
  r.max_steps = 4;
  r.micro_batch = 2;  // 4 micro-batches per step: the count must not grow with them
  // Evaluations between steps must not leak their syncs into the next step's count.
  auto run = train_on_fake(root, r, {"metrics.host_syncs=true", "data.attention=document", "model.compute_dtype=bf16",
                                     "data.validation_fraction=0.1", "train.eval_interval=2"});
  ASSERT_EQ(run.result.losses.size(), 4u);
  std::ifstream in(root / "run" / "metrics.jsonl");
  int rows = 0;
  for (std::string line; std::getline(in, line); ++rows) {
    auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("host_syncs")) << line;
    EXPECT_EQ(j["host_syncs"].get<double>(), 1.0) << line;  // the loss and its verdict, read once
  }
  EXPECT_EQ(rows, 4);
  // On the CPU there is no device to wait for: refused before any step, not a row of zeros.
  write_tiny_run(root / "cpu", r);
  auto cfg = load_config<TrainConfig>(root / "cpu" / "train.yaml", {"dist.device=cpu", "metrics.host_syncs=true"});
  TrainOptions o;
  o.progress = false;
  try {
    train(cfg, o);
    ADD_FAILURE() << "metrics.host_syncs on the CPU was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metrics.host_syncs"), std::string::npos) << e.what();
  }
}

TEST(TrainOnFakeDevice, LossesMatchTheCpuRun) {
  // The fake device runs the CPU kernels, but attention takes SDPA's unfused math path there (as an
  // out-of-tree device without its own fused kernel does), so fp32 losses agree to rounding only.
  const auto root = scratch_dir();
  TinyRun r;
  r.max_steps = 3;
  auto fake = train_on_fake(root / "fake", r, {});
  write_tiny_run(root / "cpu", r);
  auto cfg = load_config<TrainConfig>(root / "cpu" / "train.yaml", {"dist.device=cpu"});
  TrainOptions o;
  o.progress = false;
  auto cpu = train(cfg, o);
  ASSERT_EQ(fake.result.losses.size(), cpu.losses.size());
  for (size_t i = 0; i < cpu.losses.size(); ++i)
    EXPECT_NEAR(fake.result.losses[i], cpu.losses[i], 1e-5 * cpu.losses[i]) << "step " << i + 1;
}

}  // namespace
