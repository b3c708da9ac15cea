// The whole user path on an accelerator, through the real binary with the fake device preloaded
// (LD_PRELOAD): init -> prepare -> train with evaluation, document attention, padded batches,
// activation checkpointing, bf16 compute and checkpoints -> SIGKILL and --resume auto, equal to an
// uninterrupted run -> export -> generate and chat on the device. Any host/device mix-up anywhere
// ends the binary with CUDA's "Expected all tensors to be on the same device" error.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>

#include "../cli/cli_test_util.h"

namespace fs = std::filesystem;
using namespace agenttune::testing;

namespace {

// `env`, so that it also works behind `exec` (spawn) and torchrun --no-python.
const std::string kPreload = std::string("env LD_PRELOAD=") + AGENTTUNE_FAKE_DEVICE_LIB + " AGENTTUNE_FAKE_DEVICES=2";

std::string train_cmd(const fs::path& root, const fs::path& out, const std::string& extra = "") {
  const fs::path cfgs = source_dir() / "configs/tiny";
  return kPreload + " " + agenttune_bin() + " train --no-progress --config " + (cfgs / "pretrain.yaml").string() +
         " --set output_dir=" + out.string() + " --set model.init_from=" + (root / "model").string() +
         " --set data.sources.0.path=" + (root / "prepared/code").string() +
         " --set data.sources.1.path=" + (root / "prepared/text").string() +
         " --set dist.device=fake --set data.attention=document --set data.packing=pad"
         " --set model.activation_checkpointing=full --set model.compute_dtype=bf16"
         " --set train.max_steps=8 --set train.eval_interval=4 --set train.eval_batches=1"
         " --set checkpoint.interval=4 --set checkpoint.keep_last=4 --set metrics.tensorboard=false " +
         extra + " > " + out.string() + ".log 2>&1";
}

TEST(PipelineOnFakeDevice, TrainResumeExportGenerateAndChatOnTheDevice) {
  if (shared_fixture("llama2-tokenizer.model").empty()) GTEST_SKIP() << "no Llama-2 tokenizer fixture";
  const auto root = scratch_dir();
  const fs::path cfgs = source_dir() / "configs/tiny";
  std::string out;
  ASSERT_EQ(run_command(agenttune_bin() + " init --config " + (cfgs / "model.yaml").string() + " --out " +
                            (root / "model").string(), &out), 0) << out;
  ASSERT_EQ(run_command(agenttune_bin() + " prepare --config " + (cfgs / "prepare.yaml").string() +
                            " --set corpora.0.output=" + (root / "prepared/code").string() +
                            " --set corpora.1.output=" + (root / "prepared/text").string(), &out), 0) << out;

  const auto full = root / "full";
  ASSERT_EQ(run_command(train_cmd(root, full)), 0) << run_command("cat " + full.string() + ".log", &out) << out;
  run_command("cat " + full.string() + ".log", &out);
  EXPECT_NE(out.find("on fake:0 via local"), std::string::npos) << out;
  const auto losses = run_losses(full);
  ASSERT_EQ(losses.size(), 8u);
  int evals = 0;
  {
    std::ifstream in(full / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) evals += nlohmann::json::parse(line).contains("val_loss");
  }
  EXPECT_EQ(evals, 2);

  const auto killed = root / "killed";
  kill_after_checkpoint(train_cmd(root, killed), killed / "checkpoints", 4, 8, 300);
  if (HasFatalFailure()) return;
  ASSERT_EQ(run_command(train_cmd(root, killed, "--resume auto")), 0)
      << run_command("cat " + killed.string() + ".log", &out) << out;
  const auto resumed = run_losses(killed);
  ASSERT_EQ(resumed.size(), 8u);
  for (auto [step, loss] : losses) EXPECT_EQ(resumed.at(step), loss) << "step " << step;  // bit-identical

  const auto exported = root / "exported";
  ASSERT_EQ(run_command(kPreload + " " + agenttune_bin() + " export --checkpoint " + (full / "checkpoints").string() +
                            " --out " + exported.string() + " --dtype bfloat16", &out), 0) << out;
  ASSERT_EQ(run_command(kPreload + " " + agenttune_bin() + " generate --device fake:1 --json --model " +
                            exported.string() + " --prompt 'def fibonacci(n):' --max-new-tokens 6 2>&1", &out), 0)
      << out;
  EXPECT_NE(out.find("\"new_ids\""), std::string::npos) << out;
  const auto input = root / "chat.txt";
  std::ofstream(input) << "How many .log files are there?\n";
  ASSERT_EQ(run_command(kPreload + " " + agenttune_bin() + " chat --device fake --json --max-new-tokens 3 "
                            "--template llama-2-chat --model " + exported.string() + " < " + input.string() + " 2>&1",
                        &out), 0) << out;
  EXPECT_NE(out.find("\"new_ids\""), std::string::npos) << out;
}

nlohmann::json device_report(const fs::path& prefix, int rank) {
  std::ifstream in(prefix.string() + "." + std::to_string(rank) + ".json");
  EXPECT_TRUE(in.good()) << "no fake device report from rank " << rank;
  return in.good() ? nlohmann::json::parse(in) : nlohmann::json::object();
}

// Bytes each rank uploaded to its fake device in a 2-process run of `steps` steps (torchrun,
// Gloo staged through host memory); -1 where a rank touched the other rank's device.
std::vector<double> uploads_per_rank(const fs::path& root, int64_t steps) {
  TinyRun r;
  r.max_steps = steps;
  r.vocab = 8192;  // the model (about 1.2M parameters) outweighs a step's batch
  r.checkpoint = "{interval: 1000}";
  r.extra = "dist: {device: fake, strategy: full_shard, timeout_s: 60}\n";
  const auto cfg = write_tiny_run(root, r);
  const auto report = root / "report";
  std::string out;
  const std::string cmd = (source_dir() / ".venv/bin/torchrun").string() +
                          " --no-python --standalone --nproc-per-node 2 " + kPreload +
                          " AGENTTUNE_FAKE_DEVICE_REPORT=" + report.string() + " " + agenttune_bin() +
                          " train --no-progress --config " + cfg.string() + " 2>&1";
  EXPECT_EQ(run_command(cmd, &out), 0) << out;
  std::vector<double> up;
  for (int rank = 0; rank < 2; ++rank) {
    auto j = device_report(report, rank);
    auto other = j.value(std::to_string(1 - rank), nlohmann::json::object());
    EXPECT_EQ(other.value("peak_bytes", -1.0), 0.0) << "rank " << rank << " allocated on the other rank's device";
    up.push_back(j.value(std::to_string(rank), nlohmann::json::object()).value("h2d_bytes", -1.0));
  }
  return up;
}

// Every rank puts only its own shards on its device, never the whole model. Setup's uploads are
// separated from the steps' (batches, and the gathers Gloo stages through host memory) by
// running one and two steps.
TEST(PipelineOnFakeDevice, EachRankUploadsOnlyItsShardsToItsOwnDevice) {
  const auto root = scratch_dir();
  const auto one = uploads_per_rank(root / "one", 1), two = uploads_per_rank(root / "two", 2);
  TinyRun r;
  r.vocab = 8192;
  // fp32 parameters: embedding and head, and per layer q, o (h x h), k, v (h x h/2 with 2 of 4
  // heads as kv), the MLP (3 x h x ffn) and two norms; plus the final norm.
  const double params = 2.0 * r.vocab * r.hidden +
                        r.layers * (2.0 * r.hidden * r.hidden + r.hidden * r.hidden + 3.0 * r.hidden * r.ffn +
                                    2.0 * r.hidden) + r.hidden;
  for (int rank = 0; rank < 2; ++rank) {
    const double setup = one[rank] - (two[rank] - one[rank]);
    std::printf("[ figures  ] rank %d: %.0f bytes uploaded at setup (its fp32 shard: %.0f; the whole model: %.0f)\n",
                rank, setup, 4 * params / 2, 4 * params);
    EXPECT_NEAR(setup, 4 * params / 2, 0.01 * 4 * params) << "rank " << rank;
  }
}

TEST(PipelineOnFakeDevice, ImpossibleDeviceRequestsAreClearErrors) {
  const auto root = scratch_dir();
  const auto model = make_tiny_model(root);
  auto r = agenttune::testing::agenttune("generate --device fake:5 --model " + model.string() + " --prompt-ids 1,2 --max-new-tokens 1",
                     kPreload);
  expect_clean_error(r, {"fake:5 does not exist", "2 fake device(s)"});
  r = agenttune::testing::agenttune("generate --device gpu --model " + model.string() + " --prompt-ids 1,2 --max-new-tokens 1", kPreload);
  expect_clean_error(r, {"--device 'gpu' is not one of", "cuda:N", "fake"});
}

}  // namespace
