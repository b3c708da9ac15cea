// LoRA training through the real binary (model.adapter): a run SIGKILLed after a checkpoint and
// resumed equals the uninterrupted one bit for bit (adapter dropout included); checkpoints hold
// the adapters and their AdamW state only and name the base they belong to, and a resume on
// another base is refused; a 2-rank checkpoint resumes on 1 rank with the losses of a 1-rank run.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "agenttune/io/safetensors.h"
#include "cli_test_util.h"
#include "synthetic_corpus.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

constexpr const char* kLora = "--set model.adapter.kind=lora --set model.adapter.rank=8 ";

// Steps of a few tens of ms, slow enough to kill between checkpoints.
testing::TinyRun lora_run() {
  testing::TinyRun r;
  r.hidden = 128, r.ffn = 256, r.layers = 3, r.seq_len = 128, r.micro_batch = 4;
  return r;
}

std::string train_cmd(const fs::path& cfg, const fs::path& out, const std::string& extra) {
  return testing::agenttune_bin() + " train --config " + cfg.string() + " --no-progress --set output_dir=" +
         out.string() + " " + kLora + extra + " > " + out.string() + ".log 2>&1";
}

std::string log_of(const fs::path& out) {
  std::string log;
  testing::run_command("tail -30 " + out.string() + ".log", &log);
  return log;
}

// Parameters of rank-8 adapters on the seven projections of every layer: r x (in + out) each.
int64_t adapter_parameters(const testing::TinyRun& r) {
  const int64_t D = r.hidden, kv = D / 4 * 2, F = r.ffn;  // 4 heads, 2 of them for keys and values
  const int64_t per_layer = 8 * ((D + D) + 2 * (D + kv) + (D + D) + 2 * (D + F) + (F + D));
  return per_layer * r.layers;
}

TEST(TrainLora, KilledAndResumedIsBitIdenticalAndCheckpointsHoldOnlyAdapters) {
  auto root = testing::scratch_dir();
  const auto tiny = lora_run();
  auto cfg = testing::write_tiny_run(root, tiny);
  const std::string dropout = "--set model.adapter.dropout=0.1";
  ASSERT_EQ(testing::run_command(train_cmd(cfg, root / "full", dropout)), 0) << log_of(root / "full");
  auto full = testing::run_losses(root / "full");
  ASSERT_EQ(full.size(), 12u);

  auto out = root / "killed";
  testing::kill_after_checkpoint(train_cmd(cfg, out, dropout), out / "checkpoints", 6, 12, 120);
  if (HasFatalFailure()) return;
  ASSERT_EQ(testing::run_command(train_cmd(cfg, out, dropout + " --resume auto")), 0) << log_of(out);
  auto resumed = testing::run_losses(out);
  ASSERT_EQ(resumed.size(), 12u);
  for (auto [step, loss] : full) EXPECT_EQ(resumed.at(step), loss) << "step " << step;

  const auto ck = fs::path("checkpoints/step_00000012");
  auto a = SafetensorsFile::open(root / "full" / ck / "rank_00000.safetensors");
  auto b = SafetensorsFile::open(out / ck / "rank_00000.safetensors");
  ASSERT_EQ(a.entries().size(), b.entries().size());
  int64_t adapters = 0;
  for (const auto& e : a.entries()) {
    EXPECT_TRUE(at::equal(a.tensor(e.name), b.tensor(e.name))) << e.name;
    // Only the layers' adapter groups and their optimizer state: no embedding, norm or head.
    EXPECT_NE(e.name.find("layers."), std::string::npos) << e.name;
    EXPECT_NE(e.name.find(".decay"), std::string::npos) << e.name;
    if (e.name.starts_with("flat.")) adapters += a.tensor(e.name).numel();
  }
  EXPECT_EQ(adapters, adapter_parameters(tiny));
  // The adapters, two moments and a step count per group, in fp32, plus the header.
  EXPECT_LT(fs::file_size(root / "full" / ck / "rank_00000.safetensors"), 3 * 4 * adapters + 8192);
  auto meta = nlohmann::json::parse(std::ifstream(root / "full" / ck / "meta.json"));
  EXPECT_EQ(meta.at("base").at("fingerprint").get<std::string>().size(), 16u) << meta["base"];
  // The adapters trained: every B, zero at the start, has moved.
  int64_t bs = 0;
  for (const auto& g : meta.at("layout").at("groups")) {
    auto flat = a.tensor("flat." + g.at("name").get<std::string>());
    for (const auto& p : g.at("params")) {
      const auto name = p.at("name").get<std::string>();
      if (!name.ends_with(".lora_B")) continue;
      auto shape = p.at("shape").get<std::vector<int64_t>>();
      EXPECT_GT(flat.narrow(0, p.at("offset").get<int64_t>(), shape[0] * shape[1]).abs().max().item<float>(), 0) << name;
      ++bs;
    }
  }
  EXPECT_EQ(bs, 7 * tiny.layers);

  // Another base under the same adapters is refused, naming both fingerprints.
  auto other = testing::agenttune("train --config " + cfg.string() + " --no-progress --set output_dir=" +
                                  (root / "full").string() + " " + kLora + dropout +
                                  " --set model.init_seed=1 --set train.max_steps=13 --resume auto");
  EXPECT_EQ(other.rc, 2) << other.out;
  EXPECT_NE(other.out.find("the frozen base differs from the one the adapters were trained on"), std::string::npos)
      << other.out;
  EXPECT_NE(other.out.find(meta["base"]["fingerprint"].get<std::string>()), std::string::npos) << other.out;
}

// Saved by 2 ranks (full_shard: each holds half of every adapter group and of the base), resumed
// by 1: the losses of an uninterrupted 1-rank run. Dropout is off: its masks are drawn per rank.
TEST(TrainLora, TwoRankCheckpointResumesOnOneRank) {
  auto root = testing::scratch_dir();
  auto cfg = testing::write_tiny_run(root, testing::TinyRun{});
  ASSERT_EQ(testing::run_command(train_cmd(cfg, root / "one", "")), 0) << log_of(root / "one");
  auto one = testing::run_losses(root / "one");
  ASSERT_EQ(one.size(), 12u);
  ASSERT_EQ(testing::run_command(testing::torchrun(2) + train_cmd(cfg, root / "2to1", "--exit-after-steps 6")), 0)
      << log_of(root / "2to1");
  ASSERT_EQ(testing::run_command(train_cmd(cfg, root / "2to1", "--resume auto")), 0) << log_of(root / "2to1");
  auto resumed = testing::run_losses(root / "2to1");
  ASSERT_EQ(resumed.size(), 12u);
  for (auto [step, loss] : one) EXPECT_NEAR(resumed.at(step), loss, 1e-5 * std::abs(loss)) << "step " << step;
}

}  // namespace
}  // namespace agenttune
