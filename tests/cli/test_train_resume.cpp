// Exact resume, proven through the real binary: a run of 2N steps and a run SIGKILLed after its
// step-N checkpoint then resumed with --resume auto give bit-identical losses and weights on CPU.
// SIGTERM (Slurm preemption) checkpoints, exits 143, and resumes the same way. Export gives a
// folder that transformers loads with our logits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/safetensors.h"
#include "synthetic_corpus.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using testing::spawn;
using testing::wait_exit;
using testing::wait_for;

std::string bin() { return testing::agenttune_bin(); }

// Data + a config small enough for CI yet with steps slow enough (~50 ms) to kill between them.
fs::path write_config(const fs::path& root) {
  testing::make_synthetic_source(root / "code", 200, 1000, 1, 20, 300, 4096);
  testing::make_synthetic_source(root / "text", 40, 3000, 2, 20, 300, 4096);
  auto cfg = root / "train.yaml";
  std::ofstream(cfg) << R"(output_dir: run
model:
  shape: {vocab_size: 4096, hidden_size: 128, intermediate_size: 256, num_hidden_layers: 3,
          num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256}
data:
  sources:
    - {name: code, path: code, weight: 10}
    - {name: text, path: text, weight: 1}
  seq_len: 128
  validation_fraction: 0.05
train:
  max_steps: 10
  micro_batch_size: 4
  global_batch_sequences: 8
  lr: 1.0e-2
  warmup_steps: 1
  eval_interval: 5
  eval_batches: 1
checkpoint: {interval: 5, keep_last: 2}
metrics: {tensorboard: false}
)";
  return cfg;
}

std::string train_cmd(const fs::path& cfg, const fs::path& out, const std::string& extra = "") {
  return bin() + " train --config " + cfg.string() + " --no-progress --set output_dir=" + out.string() + " " + extra +
         " > " + (out.string() + ".log") + " 2>&1";
}

void expect_same_final_weights(const fs::path& a, const fs::path& b) {
  auto fa = SafetensorsFile::open(a / "checkpoints/step_00000010/rank_00000.safetensors");
  auto fb = SafetensorsFile::open(b / "checkpoints/step_00000010/rank_00000.safetensors");
  ASSERT_EQ(fa.entries().size(), fb.entries().size());
  for (const auto& e : fa.entries()) EXPECT_TRUE(at::equal(fa.tensor(e.name), fb.tensor(e.name))) << e.name;
}

class TrainResume : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::scratch_dir();
    cfg_ = write_config(root_);
    int rc = testing::run_command(train_cmd(cfg_, root_ / "full"));
    ASSERT_EQ(rc, 0) << testing::run_command("cat " + (root_ / "full.log").string());
    full_ = testing::run_losses(root_ / "full");
    ASSERT_EQ(full_.size(), 10u);
    EXPECT_LT(full_.at(10), full_.at(1)) << "the loss did not fall";
  }
  fs::path root_, cfg_;
  std::map<int64_t, double> full_;
};

TEST_F(TrainResume, SigkillAfterCheckpointThenResumeIsBitIdentical) {
  auto out = root_ / "killed";
  testing::kill_after_checkpoint(train_cmd(cfg_, out), out / "checkpoints", 5, 10, 120);
  if (HasFatalFailure()) return;

  int rc = testing::run_command(train_cmd(cfg_, out, "--resume auto"));
  ASSERT_EQ(rc, 0) << testing::run_command("cat " + out.string() + ".log");
  auto resumed = testing::run_losses(out);
  ASSERT_EQ(resumed.size(), 10u);
  for (auto [step, loss] : full_) EXPECT_EQ(resumed.at(step), loss) << "step " << step;  // bit-identical
  expect_same_final_weights(root_ / "full", out);
}

// dist.offload: optimizer (masters and moments in host memory, AdamW on the host) SIGKILLed and
// resumed: bit-identical to the uninterrupted run without offload, losses and weights.
TEST_F(TrainResume, OffloadedRunKilledAndResumedEqualsTheResidentRun) {
  auto out = root_ / "offloaded";
  const std::string offload = "--set dist.offload=optimizer";
  testing::kill_after_checkpoint(train_cmd(cfg_, out, offload), out / "checkpoints", 5, 10, 120);
  if (HasFatalFailure()) return;
  int rc = testing::run_command(train_cmd(cfg_, out, offload + " --resume auto"));
  ASSERT_EQ(rc, 0) << testing::run_command("cat " + out.string() + ".log");
  auto resumed = testing::run_losses(out);
  ASSERT_EQ(resumed.size(), 10u);
  for (auto [step, loss] : full_) EXPECT_EQ(resumed.at(step), loss) << "step " << step;
  expect_same_final_weights(root_ / "full", out);
}

TEST_F(TrainResume, SigtermCheckpointsExits143AndResumes) {
  auto out = root_ / "preempted";
  pid_t pid = spawn(train_cmd(cfg_, out, "--set checkpoint.interval=100"));
  ASSERT_TRUE(wait_for(out / "metrics.jsonl", 120));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  kill(pid, SIGTERM);
  int rc = wait_exit(pid);
  if (rc == 0) GTEST_SKIP() << "the run finished before SIGTERM arrived";
  EXPECT_EQ(rc, 143);
  auto latest = testing::run_losses(out).rbegin()->first;
  EXPECT_TRUE(fs::exists(out / "checkpoints" / fmt::format("step_{:08d}", latest) / "COMPLETE"));

  rc = testing::run_command(train_cmd(cfg_, out, "--set checkpoint.interval=100 --resume auto"));
  ASSERT_EQ(rc, 0);
  auto resumed = testing::run_losses(out);
  for (auto [step, loss] : full_) EXPECT_EQ(resumed.at(step), loss) << "step " << step;
}

TEST_F(TrainResume, DivergenceSkipsUpdatesThenStopsNamingTheLastGoodCheckpoint) {
  // An absurd learning rate blows the weights up after the first update: every later step is
  // non-finite, its update is skipped, nothing is saved during the streak, and the run stops
  // after 2 in a row naming a complete, loadable checkpoint.
  auto out = root_ / "diverged";
  std::string log;
  int rc = testing::run_command(train_cmd(cfg_, out, "--set train.lr=1.0e30 --set train.warmup_steps=0 "
                                                    "--set train.max_nonfinite_in_a_row=2 --set checkpoint.interval=1"));
  testing::run_command("cat " + out.string() + ".log", &log);
  EXPECT_EQ(rc, 2) << log;
  EXPECT_NE(log.find("update skipped"), std::string::npos) << log;
  EXPECT_NE(log.find("stopping after 2 bad step(s) in a row (train.on_nonfinite: skip); the last good checkpoint is"), std::string::npos) << log;
  const std::string key = "the last good checkpoint is ";
  auto at = log.find(key);
  ASSERT_NE(at, std::string::npos);
  auto named = log.substr(at + key.size(), log.find('\n', at) - at - key.size());
  EXPECT_TRUE(fs::exists(fs::path(named) / "COMPLETE")) << named;
}

TEST_F(TrainResume, ExportLoadsInTransformersWithOurLogits) {
  auto hf = root_ / "hf";
  int rc = testing::run_command(bin() + " export --checkpoint " + (root_ / "full/checkpoints").string() +
                                " --out " + hf.string() + " --dtype float32");
  ASSERT_EQ(rc, 0);
  auto loaded = load_pretrained(hf);
  auto tokens = at::arange(1000, 1000 + 2 * 19, at::kLong).view({2, 19});
  at::NoGradGuard ng;
  auto logits = loaded.model->forward(tokens, default_positions(2, 19, 0, at::kCPU));
  write_safetensors(hf / "expect.safetensors", {{"tokens", tokens.to(at::kFloat)}, {"logits", logits.contiguous()}});
  std::string out;
  rc = testing::run_command(testing::venv_python().string() + " " +
                                (testing::source_dir() / "tests/oracle/check_logits.py").string() + " " + hf.string(),
                            &out);
  EXPECT_EQ(rc, 0) << out;
  // The exported weights are the checkpoint's, not a re-initialisation.
  auto ck = SafetensorsFile::open(root_ / "full/checkpoints/step_00000010/rank_00000.safetensors");
  // The head unit's undecayed group holds exactly the final norm weight (hidden size 128).
  EXPECT_TRUE(at::equal(ck.tensor("flat.head.no_decay").narrow(0, 0, 128), loaded.model->model->norm->weight));
}

}  // namespace
}  // namespace agenttune
