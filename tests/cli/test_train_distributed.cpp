// Sharded training through the real binary and torchrun (Gloo on CPU): 2 ranks give the losses
// of 1 rank; a checkpoint saved at world size 2 resumes at 1 and one saved at 1 resumes at 2 with
// the losses of an uninterrupted run; export from a sharded checkpoint equals export from the
// single-rank one; a rank killed mid-run makes the other exit non-zero naming the collective.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "agenttune/io/safetensors.h"
#include "synthetic_corpus.h"
#include "cli_test_util.h"
#include "test_paths.h"

extern char** environ;

namespace agenttune {
namespace {

namespace fs = std::filesystem;

std::string bin() { return testing::agenttune_bin(); }

using testing::torchrun;

fs::path write_config(const fs::path& root, const std::string& strategy) {
  testing::TinyRun r;
  r.extra = "dist: {strategy: " + strategy + ", timeout_s: 20}\n";
  return testing::write_tiny_run(root, r);
}

int run(const std::string& cmd, const fs::path& log) {
  int rc = testing::run_command(cmd + " > " + log.string() + " 2>&1");
  if (rc != 0) {
    std::string out;
    testing::run_command("tail -20 " + log.string(), &out);
    ADD_FAILURE() << cmd << "\nexit " << rc << ":\n" << out;
  }
  return rc;
}

std::string train(const fs::path& cfg, const fs::path& out, const std::string& extra = "") {
  return bin() + " train --config " + cfg.string() + " --no-progress --set output_dir=" + out.string() + " " + extra;
}

void expect_close(const std::map<int64_t, double>& got, const std::map<int64_t, double>& want, int64_t from,
                  int64_t to) {
  for (int64_t s = from; s <= to; ++s) {
    ASSERT_TRUE(got.count(s)) << "no loss for step " << s;
    EXPECT_NEAR(got.at(s), want.at(s), 1e-5 * std::abs(want.at(s))) << "step " << s;
  }
}

class TrainDistributed : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainDistributed, TwoRanksMatchOneAndCheckpointsReshard) {
  auto root = testing::scratch_dir();
  auto cfg = write_config(root, GetParam());
  ASSERT_EQ(run(train(cfg, root / "one"), root / "one.log"), 0);
  auto one = testing::run_losses(root / "one");
  ASSERT_EQ(one.size(), 12u);
  EXPECT_LT(one.at(12), one.at(1));

  // 2 ranks for the whole run.
  ASSERT_EQ(run(torchrun(2) + train(cfg, root / "two"), root / "two.log"), 0);
  expect_close(testing::run_losses(root / "two"), one, 1, 12);

  // Saved at 2, resumed at 1.
  ASSERT_EQ(run(torchrun(2) + train(cfg, root / "2to1", "--exit-after-steps 6"), root / "2to1a.log"), 0);
  ASSERT_EQ(run(train(cfg, root / "2to1", "--resume auto"), root / "2to1b.log"), 0);
  expect_close(testing::run_losses(root / "2to1"), one, 1, 12);

  // Saved at 1, resumed at 2.
  ASSERT_EQ(run(train(cfg, root / "1to2", "--exit-after-steps 6"), root / "1to2a.log"), 0);
  ASSERT_EQ(run(torchrun(2) + train(cfg, root / "1to2", "--resume auto"), root / "1to2b.log"), 0);
  expect_close(testing::run_losses(root / "1to2"), one, 7, 12);

  // Export streams from the 2-rank checkpoint and equals the 1-rank export of the same step.
  for (auto name : {"one", "two"})
    ASSERT_EQ(run(bin() + " export --dtype float32 --checkpoint " + (root / name / "checkpoints/step_00000012").string() +
                      " --out " + (root / name).string() + "_hf",
                  root / (std::string(name) + "_export.log")),
              0);
  auto a = SafetensorsFile::open(root / "one_hf/model.safetensors");
  auto b = SafetensorsFile::open(root / "two_hf/model.safetensors");
  ASSERT_EQ(a.entries().size(), b.entries().size());
  for (const auto& e : a.entries()) {
    auto x = a.tensor(e.name).to(at::kDouble), y = b.tensor(e.name).to(at::kDouble);
    EXPECT_LE(((x - y).norm() / x.norm()).item<double>(), 1e-5) << e.name;
  }
}

// The last: full_shard with the optimizer offloaded to the host (its masters and moments reshard
// the same way).
INSTANTIATE_TEST_SUITE_P(Strategies, TrainDistributed,
                         ::testing::Values("full_shard", "shard_grad_op", "no_shard", "full_shard, offload: optimizer"));

// A Qwen3-shaped model (q/k norms, explicit head_dim; biases too through attention_bias) through the
// same path: 2 ranks give 1 rank's losses, a 2-rank checkpoint resumes at 1 rank, and its export
// names Qwen3ForCausalLM and holds the norms and biases (transformers reloading a family export with
// our logits: tests/model/test_families.cpp).
TEST(TrainDistributedFamilies, QwenShapedTwoRanksMatchOneResumeAndExport) {
  auto root = testing::scratch_dir();
  auto cfg = write_config(root, "full_shard");
  const std::string qwen3 =
      "--set model.shape.model_type=qwen3 --set model.shape.head_dim=32 --set model.shape.attention_bias=true ";
  ASSERT_EQ(run(train(cfg, root / "one", qwen3), root / "one.log"), 0);
  auto one = testing::run_losses(root / "one");
  ASSERT_EQ(one.size(), 12u);
  ASSERT_EQ(run(torchrun(2) + train(cfg, root / "2to1", qwen3 + "--exit-after-steps 6"), root / "2to1a.log"), 0);
  ASSERT_EQ(run(train(cfg, root / "2to1", qwen3 + "--resume auto"), root / "2to1b.log"), 0);
  expect_close(testing::run_losses(root / "2to1"), one, 1, 12);

  const auto out = root / "2to1_hf";
  ASSERT_EQ(run(bin() + " export --dtype float32 --checkpoint " + (root / "2to1/checkpoints/step_00000012").string() +
                    " --out " + out.string(),
                root / "export.log"),
            0);
  const auto config = nlohmann::json::parse(std::ifstream(out / "config.json"));
  EXPECT_EQ(config.at("architectures"), nlohmann::json::array({"Qwen3ForCausalLM"}));
  const auto weights = SafetensorsFile::open(out / "model.safetensors");
  size_t norms = 0, biases = 0;
  for (const auto& e : weights.entries()) {
    norms += e.name.find("self_attn.q_norm.weight") != std::string::npos;
    biases += e.name.find("self_attn.o_proj.bias") != std::string::npos;
  }
  EXPECT_EQ(norms, 2u);
  EXPECT_EQ(biases, 2u);
}

TEST(TrainDistributedFailure, KilledRankMakesTheOtherExitNamingTheCollective) {
  auto root = testing::scratch_dir();
  auto cfg = write_config(root, "full_shard");
  // Launched by hand (torchrun would tear the survivor down itself and prove nothing).
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    std::string cmd = "RANK=" + std::to_string(r) +
                      " WORLD_SIZE=2 LOCAL_RANK=" + std::to_string(r) +
                      " LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(29700 + ::getpid() % 200) +
                      " exec " + train(cfg, root / "run", "--set train.max_steps=100000 --set dist.timeout_s=5") + " > " +
                      (root / ("rank" + std::to_string(r) + ".log")).string() + " 2>&1";
    const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
    pid_t pid;
    ASSERT_EQ(posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
    pids.push_back(pid);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(root / "run/metrics.jsonl") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pids[1], SIGKILL);
  auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  waitpid(pids[0], &status, 0);
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  waitpid(pids[1], nullptr, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "rank 0 died of a signal instead of exiting";
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_LT(waited, 30.0) << "rank 0 took too long to notice";
  std::string log;
  testing::run_command("cat " + (root / "rank0.log").string(), &log);
  EXPECT_NE(log.find("rank 0 of 2"), std::string::npos) << log;
  EXPECT_TRUE(log.find("all_reduce") != std::string::npos || log.find("all_gather") != std::string::npos ||
              log.find("reduce_scatter") != std::string::npos || log.find("barrier") != std::string::npos)
      << log;
}

}  // namespace
}  // namespace agenttune
