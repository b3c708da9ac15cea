// What a training run guarantees about its own files, through the real binary: one trainer per
// output folder (a dead one's lock does not count), metrics.jsonl is only ever appended to, a
// resume into another model or other data is refused naming the key, a manifest cannot grow the
// model beyond its added tokens, and bad steps never leave a checkpoint behind (skip, stop,
// rollback).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agenttune/io/safetensors.h"
#include "agenttune/util/files.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::Run;

// A tiny run (~20 ms a step) with a checkpoint every 2 steps.
fs::path write_config(const fs::path& root) {
  testing::TinyRun r;
  r.vocab = 2048, r.ffn = 176, r.max_positions = 128, r.max_steps = 6, r.global_batch = 4;
  r.code_docs = 120, r.text_docs = 30, r.max_doc_len = 200;
  r.checkpoint = "{interval: 2, keep_last: 2}";
  return testing::write_tiny_run(root, r);
}

std::string train_args(const fs::path& cfg, const fs::path& out, const std::string& extra = "") {
  return "train --config " + cfg.string() + " --no-progress --set output_dir=" + out.string() + " " + extra;
}

using testing::metrics_rows;

std::vector<std::string> checkpoint_names(const fs::path& root) {
  std::vector<std::string> names;
  if (!fs::exists(root)) return names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void expect_error(const Run& r, std::initializer_list<std::string> fragments) {
  EXPECT_EQ(r.rc, 2) << r.out;
  for (const auto& f : fragments) EXPECT_NE(r.out.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.out;
}

TEST(RunSafety, SecondTrainerIsRefusedAndAKilledOnesLockIsNot) {
  auto root = testing::scratch_dir();
  auto cfg = write_config(root);
  auto out = root / "run";
  pid_t first = testing::spawn(testing::agenttune_bin() + " " +
                               train_args(cfg, out, "--set train.max_steps=100000") + " > " + root.string() +
                               "/first.log 2>&1");
  ASSERT_GT(first, 0);
  ASSERT_TRUE(testing::wait_for(out / "checkpoints/step_00000002/COMPLETE", 120));

  auto second = testing::agenttune(train_args(cfg, out));
  expect_error(second, {"another training run is using this output folder", "pid " + std::to_string(first)});

  kill(first, SIGKILL);
  EXPECT_EQ(testing::wait_exit(first), 128 + SIGKILL);
  const std::string before = read_text_file(out / "metrics.jsonl");
  auto rows_before = metrics_rows(out);
  ASSERT_GE(rows_before.size(), 2u);

  // The killed run's lock file is still there, but its flock died with it.
  ASSERT_TRUE(fs::exists(out / ".agenttune.lock"));
  auto third = testing::agenttune(train_args(cfg, out, "--resume auto --set train.max_steps=100000 --exit-after-steps " +
                                                           std::to_string(rows_before.size() + 2)));
  ASSERT_EQ(third.rc, 0) << third.out;
  // Appended, never rewritten: the killed run's rows are all still there, byte for byte.
  const std::string after = read_text_file(out / "metrics.jsonl");
  ASSERT_GT(after.size(), before.size());
  EXPECT_EQ(after.substr(0, before.size()), before);
  auto rows = metrics_rows(out);
  EXPECT_EQ(rows.back()["step"].get<size_t>(), rows_before.size() + 2);
}

TEST(RunSafety, ResumeIntoAnotherModelOrOtherDataIsRefused) {
  auto root = testing::scratch_dir();
  auto cfg = write_config(root);
  auto out = root / "run";
  ASSERT_EQ(testing::agenttune(train_args(cfg, out, "--set train.max_steps=2")).rc, 0);
  // A smaller FFN would load cut flat buffers (up_proj from gate_proj's tail).
  expect_error(testing::agenttune(train_args(cfg, out, "--resume auto --set model.shape.intermediate_size=160")),
               {"step_00000002/meta.json", "model_config.intermediate_size", "176", "160"});
  // hidden_size changes head_dim with it, and head_dim sorts first: the error used to name
  // model_config.head_dim (16 vs 24), a key the user never set. It names the one they did.
  auto wider = testing::agenttune(train_args(cfg, out, "--resume auto --set model.shape.hidden_size=96"));
  expect_error(wider, {"model_config.hidden_size (model.shape.hidden_size) is 64 in the checkpoint but 96"});
  EXPECT_EQ(wider.out.find("head_dim"), std::string::npos) << wider.out;
  expect_error(testing::agenttune(train_args(cfg, out, "--resume auto --set data.seq_len=32")),
               {"data_plan.seq_len", "64", "32"});
  expect_error(testing::agenttune(train_args(cfg, out, "--resume auto --set data.sources.1.weight=3")),
               {"data_plan.sources[1].weight"});
  // What may change on a resume still resumes: the schedule's length.
  auto ok = testing::agenttune(train_args(cfg, out, "--resume auto --set train.max_steps=3"));
  EXPECT_EQ(ok.rc, 0) << ok.out;
}

TEST(RunSafety, ManifestCanGrowTheModelOnlyByItsAddedTokens) {
  auto root = testing::scratch_dir();
  auto cfg = write_config(root);
  auto manifest = root / "text/manifest.json";
  json m = json::parse(read_text_file(manifest));
  m["vocab_size"] = 2050;  // two more than the model, with no added tokens listed
  write_file_atomic(manifest, m.dump(2));
  expect_error(testing::agenttune(train_args(cfg, root / "run")),
               {"text/manifest.json", "vocab_size 2050 exceeds the model's 2048 by 2", "0 added token"});
  m["added_tokens"] = json::array({"<|im_start|>", "<|im_end|>"});  // as a ChatML prepare writes
  write_file_atomic(manifest, m.dump(2));
  auto r = testing::agenttune(train_args(cfg, root / "run2", "--set train.max_steps=1"));
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("vocabulary grows from 2048 to 2050"), std::string::npos) << r.out;
}

// Inf initial weights: every step is non-finite, so no checkpoint may ever be written (a saved
// one would hold the Inf weights and be called "last good"), and the stop names none.
TEST(RunSafety, NonFiniteStreakNeverSaves) {
  auto root = testing::scratch_dir();
  auto cfg = write_config(root);
  ASSERT_EQ(testing::agenttune(train_args(cfg, root / "good", "--set train.max_steps=2")).rc, 0);
  auto init = testing::agenttune("export --checkpoint " + (root / "good/checkpoints").string() + " --out " +
                                 (root / "hf").string());
  ASSERT_EQ(init.rc, 0) << init.out;
  auto st = SafetensorsFile::open(root / "hf/model.safetensors");
  NamedTensors tensors;
  for (const auto& e : st.entries()) {
    at::Tensor t = st.tensor(e.name).clone();
    if (e.name == "model.layers.0.mlp.down_proj.weight") t.fill_(INFINITY);
    tensors.emplace_back(e.name, t);
  }
  write_safetensors(root / "hf/model.safetensors", tensors);

  for (const char* mode : {"skip", "rollback"}) {
    auto out = root / (std::string("inf_") + mode);
    auto r = testing::agenttune(train_args(cfg, out,
                                           "--set model.init_from=" + (root / "hf").string() +
                                               " --set checkpoint.interval=1 --set train.max_nonfinite_in_a_row=3"
                                               " --set train.on_nonfinite=" + mode));
    expect_error(r, {"stopping after 3 bad step(s) in a row", "the last good checkpoint is (none yet)"});
    for (const auto& n : checkpoint_names(out / "checkpoints")) EXPECT_FALSE(n.starts_with("step_")) << mode << ": " << n;
  }
  auto stop = testing::agenttune(train_args(cfg, root / "inf_stop",
                                            "--set model.init_from=" + (root / "hf").string() +
                                                " --set train.on_nonfinite=stop"));
  expect_error(stop, {"stopping after 1 bad step(s)", "on_nonfinite: stop"});
}

// A streak that starts after good checkpoints: nothing is saved while it lasts, keep_last never
// prunes the good one, and the stop names it.
TEST(RunSafety, StreakAfterGoodStepsKeepsTheLastGoodCheckpoint) {
  auto root = testing::scratch_dir();
  auto cfg = write_config(root);
  auto out = root / "run";
  ASSERT_EQ(testing::agenttune(train_args(cfg, out, "--set train.max_steps=2")).rc, 0);
  // An absurd learning rate from step 3 on: step 3's update makes the weights huge (finite),
  // step 4's weight decay overflows them to Inf (its loss is still finite, so only the check
  // before saving catches it), and the losses of steps 5.. are NaN.
  auto r = testing::agenttune(train_args(cfg, out,
                                         "--resume auto --set train.lr=1e30 --set train.warmup_steps=0 --set "
                                         "train.max_steps=40 --set checkpoint.interval=1 --set checkpoint.keep_last=1 "
                                         "--set train.max_nonfinite_in_a_row=4 --set train.clip_grad_norm=0"));
  ASSERT_EQ(r.rc, 2) << r.out;
  ASSERT_NE(r.out.find("stopping after 4 bad step(s) in a row"), std::string::npos) << r.out;
  // The named checkpoint exists, opens, and is the newest one: nothing was written during the streak.
  auto named = r.out.substr(r.out.find("the last good checkpoint is ") + 28);
  named = named.substr(0, named.find_first_of("\n\r"));
  ASSERT_TRUE(fs::exists(fs::path(named) / "COMPLETE")) << named;
  auto names = checkpoint_names(out / "checkpoints");
  std::string newest;
  for (const auto& n : names)
    if (n.starts_with("step_")) newest = n;
  EXPECT_EQ(fs::path(named).filename().string(), newest) << r.out;
  for (const auto& row : metrics_rows(out))
    if (row.contains("skipped")) EXPECT_GT(row["step"].get<int64_t>(), std::stoll(newest.substr(5))) << row;
}

// train.on_nonfinite: rollback with loss-spike detection. The main source is one document the
// model learns within a few steps; the other, about 2 % of the tokens, is documents it never
// learns, so each time one comes up the loss jumps by tenths over a window varying by thousandths.
// Every such spike rolls the run back to its last checkpoint and skips that data: the schedule
// replays, and the run finishes on the learnable data alone. The same with LoRA adapters (their
// checkpoint holds only the adapters; the frozen base stays as it is).
class Rollback : public ::testing::TestWithParam<std::string> {};

TEST_P(Rollback, ReloadsTheLastGoodCheckpointAndSkipsTheData) {
  auto root = testing::scratch_dir();
  testing::TinyRun tiny;
  tiny.vocab = 2048, tiny.max_positions = 128, tiny.max_steps = 40, tiny.global_batch = 4;
  tiny.code_docs = 1, tiny.text_docs = 30, tiny.max_doc_len = 120;
  tiny.checkpoint = "{interval: 1, keep_last: 2}";
  auto cfg = testing::write_tiny_run(root, tiny);
  auto out = root / "run";
  auto r = testing::agenttune(train_args(cfg, out,
                                         "--set data.sources.1.weight=0.2 --set train.on_nonfinite=rollback --set "
                                         "train.spike_zscore=10 --set train.spike_window=8 --set "
                                         "train.max_nonfinite_in_a_row=5 " + GetParam()));
  ASSERT_EQ(r.rc, 0) << r.out;
  auto rows = metrics_rows(out);
  int rollbacks = 0;
  std::string trace;
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t step = rows[i]["step"].get<int64_t>();
    trace += fmt::format("{}:{:.4f}{} ", step, rows[i]["loss"].get<double>(), rows[i].contains("skipped") ? "*" : "");
    if (!rows[i].contains("skipped")) continue;
    ++rollbacks;
    ASSERT_LT(i + 1, rows.size());
    // Back to the checkpoint of step - 1 (saved every step): the next row is that step again,
    // under the same learning rate (the schedule replays) but on other data (that was skipped).
    EXPECT_EQ(rows[i + 1]["step"].get<int64_t>(), step) << rows[i + 1];
    EXPECT_EQ(rows[i + 1]["lr"].get<double>(), rows[i]["lr"].get<double>());
    EXPECT_LT(rows[i + 1]["loss"].get<double>(), rows[i]["loss"].get<double>());
  }
  std::cout << "losses (* = spike, rolled back): " << trace << "\n";
  EXPECT_GT(rollbacks, 0) << "no spike was detected: the test proves nothing\n" << trace;
  EXPECT_NE(r.out.find("rollback: step"), std::string::npos) << r.out;
  EXPECT_EQ(rows.back()["step"], 40);
}

INSTANTIATE_TEST_SUITE_P(RunSafety, Rollback,
                         ::testing::Values("", "--set model.adapter.kind=lora --set model.adapter.rank=16 --set train.lr=3e-2"),
                         [](const auto& info) { return info.param.empty() ? "full" : "lora"; });

}  // namespace
}  // namespace agenttune
