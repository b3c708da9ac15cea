// Issue 22, "every setting takes effect or is an error", through the real binary: a model.shape
// beside model.init_from that the run used to ignore (fresh or resumed) is refused unless equal,
// and the resolved config shows the architecture trained; a resume names each schedule setting it
// changes; train.eval_interval without a validation split is refused; val_loss reaches the
// console; metrics.jsonl names its cumulative and per-step counters; `plan` takes the folder's
// architecture when the folder is here.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "agenttune/config/load.h"
#include "agenttune/train/lr_schedule.h"
#include "agenttune/train/train_config.h"
#include "agenttune/util/files.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::agenttune;
using testing::expect_clean_error;
using testing::metrics_rows;

// ~20 ms a step; a checkpoint every 2 steps.
testing::TinyRun tiny_run() {
  testing::TinyRun r;
  r.vocab = 2048, r.ffn = 128, r.max_positions = 128, r.max_steps = 4, r.global_batch = 4;
  r.code_docs = 120, r.text_docs = 30, r.max_doc_len = 200;
  r.checkpoint = "{interval: 2, keep_last: 2}";
  return r;
}

// `init`s root/model with the run's shape, as configs/tiny/model.yaml does for configs/tiny/*.yaml.
fs::path init_model(const fs::path& root, const testing::TinyRun& r) {
  std::ofstream(root / "model.yaml") << "model:\n  vocab_size: " << r.vocab << "\n  hidden_size: " << r.hidden
                                     << "\n  intermediate_size: " << r.ffn << "\n  num_hidden_layers: " << r.layers
                                     << "\n  num_attention_heads: 4\n  num_key_value_heads: 2\n"
                                        "  max_position_embeddings: "
                                     << r.max_positions << "\nseed: 3\n";
  auto init = agenttune("init --config " + (root / "model.yaml").string() + " --out " + (root / "model").string());
  EXPECT_EQ(init.rc, 0) << init.out;
  return root / "model";
}

// A tiny run's config beside a model folder of the same shape.
struct RunAndModel {
  fs::path root = testing::scratch_dir();
  testing::TinyRun r = tiny_run();
  fs::path cfg = testing::write_tiny_run(root, r);
  fs::path model = init_model(root, r);
};

std::string train_args(const fs::path& cfg, const fs::path& out, const std::string& extra,
                       const std::string& progress = "--no-progress") {
  return "train --config " + cfg.string() + " " + progress + " --set output_dir=" + out.string() + " " + extra;
}

void expect_shape(const TrainConfig& c, const testing::TinyRun& r, const std::string& where) {
  ASSERT_TRUE(c.model.shape.has_value()) << where;
  EXPECT_EQ(c.model.shape->vocab_size, r.vocab) << where;
  EXPECT_EQ(c.model.shape->hidden_size, r.hidden) << where;
  EXPECT_EQ(c.model.shape->intermediate_size, r.ffn) << where;
  EXPECT_EQ(c.model.shape->num_hidden_layers, r.layers) << where;
  EXPECT_EQ(c.model.shape->max_position_embeddings, r.max_positions) << where;
}

TEST(SettingsTakeEffect, ShapeBesideInitFromMustEqualTheFoldersAndTheResolvedConfigShowsIt) {
  const RunAndModel m;
  const auto& [root, r, cfg, model] = m;
  const std::string from = "--set model.init_from=" + model.string() + " ";
  const std::string mismatch = "model.shape.hidden_size is 128, but model.init_from " + model.string() +
                               " has 64 (its config.json); remove model.shape";

  // Equal shapes, as the demo passes init_from to configs/tiny/*.yaml: trains.
  auto same = agenttune(train_args(cfg, root / "same", from + "--set train.max_steps=1"));
  EXPECT_EQ(same.rc, 0) << same.out;
  // A wider shape used to train the folder's width 64 and exit 0.
  expect_clean_error(agenttune(train_args(cfg, root / "wider", from + "--set model.shape.hidden_size=128")),
                     {mismatch, "or make it equal"});
  EXPECT_FALSE(fs::exists(root / "wider" / "checkpoints")) << "refused before any training";

  // No shape: the resolved config shows the folder's architecture (it showed Llama-7B's
  // defaults), and loads again beside the same init_from.
  auto bare = agenttune(train_args(cfg, root / "bare", from + "--set model.shape=null --set train.max_steps=2"));
  ASSERT_EQ(bare.rc, 0) << bare.out;
  expect_shape(load_config<TrainConfig>(root / "bare" / "config.yaml"), r, "config.yaml");
  const auto meta = json::parse(read_text_file(root / "bare/checkpoints/step_00000002/meta.json"));
  expect_shape(load_config_text<TrainConfig>(meta["config"]["yaml"].get<std::string>(),
                                             ConfigSource{"meta.json", root, {}}),
               r, "the checkpoint's config");
  auto again = agenttune("train --no-progress --config " + (root / "bare" / "config.yaml").string() +
                         " --set output_dir=" + (root / "again").string() + " --set train.max_steps=1");
  EXPECT_EQ(again.rc, 0) << again.out;

  // A resume checks the same way (it also used to take the folder's shape silently).
  expect_clean_error(agenttune(train_args(cfg, root / "bare",
                                          from + "--resume auto --set train.max_steps=3 --set model.shape.hidden_size=128")),
                     {mismatch});
}

// The data's added tokens (ChatML's) grow the model at train time. The resolved config keeps the
// architecture before the growth, so that it loads again beside the same model; the log and each
// checkpoint's model_config carry the grown size.
TEST(SettingsTakeEffect, TheResolvedVocabularyIsTheOneBeforeTheDataGrowsIt) {
  const RunAndModel m;
  const auto manifest = m.root / "text/manifest.json";
  json j = json::parse(read_text_file(manifest));
  j["vocab_size"] = m.r.vocab + 2;
  j["added_tokens"] = json::array({"<|im_start|>", "<|im_end|>"});
  write_file_atomic(manifest, j.dump(2));
  const auto out = m.root / "run";
  auto r = agenttune(train_args(m.cfg, out, "--set model.shape=null --set train.max_steps=2 --set model.init_from=" +
                                                m.model.string()));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("vocabulary grows from 2048 to 2050"), std::string::npos) << r.out;
  EXPECT_EQ(load_config<TrainConfig>(out / "config.yaml").model.shape->vocab_size, 2048);
  const auto meta = json::parse(read_text_file(out / "checkpoints/step_00000002/meta.json"));
  EXPECT_EQ(meta["model_config"]["vocab_size"].get<int64_t>(), 2050);
  auto again = agenttune("train --no-progress --config " + (out / "config.yaml").string() + " --set output_dir=" +
                         (m.root / "again").string());
  EXPECT_EQ(again.rc, 0) << again.out;
}

TEST(SettingsTakeEffect, AResumeNamesEveryScheduleSettingItChanges) {
  const auto root = testing::scratch_dir();
  const auto cfg = testing::write_tiny_run(root, tiny_run());
  const auto out = root / "run";
  ASSERT_EQ(agenttune(train_args(cfg, out, "--exit-after-steps 2")).rc, 0);
  // The case: an override on one resume, none on the next, each taken silently.
  auto lower = agenttune(train_args(cfg, out, "--resume auto --exit-after-steps 3 --set train.lr=1.0e-3 "
                                              "--set train.warmup_steps=2"));
  ASSERT_EQ(lower.rc, 0) << lower.out;
  EXPECT_NE(lower.out.find("resume: train.lr changed 0.01 -> 0.001 (the run continues from step 2 with the new value)"),
            std::string::npos)
      << lower.out;
  EXPECT_NE(lower.out.find("resume: train.warmup_steps changed 1 -> 2"), std::string::npos) << lower.out;
  auto back = agenttune(train_args(cfg, out, "--resume auto"));
  ASSERT_EQ(back.rc, 0) << back.out;
  EXPECT_NE(back.out.find("resume: train.lr changed 0.001 -> 0.01 (the run continues from step 3"), std::string::npos)
      << back.out;
  EXPECT_NE(back.out.find("resume: train.warmup_steps changed 2 -> 1"), std::string::npos) << back.out;
  EXPECT_EQ(back.out.find("resume: train.max_steps"), std::string::npos) << back.out;
  // The rows after each resume ran with the rate the log announced.
  const auto rows = metrics_rows(out);
  ASSERT_EQ(rows.size(), 4u);
  const LrSchedule lowered{1.0e-3, 2, 4, LrDecay::Cosine, 0.1, 0.0}, file{1.0e-2, 1, 4, LrDecay::Cosine, 0.1, 0.0};
  EXPECT_DOUBLE_EQ(rows[2]["lr"].get<double>(), lowered.lr(2));
  EXPECT_DOUBLE_EQ(rows[3]["lr"].get<double>(), file.lr(3));
}

TEST(SettingsTakeEffect, EvaluationNeedsASplitAndItsLossReachesTheConsole) {
  const auto root = testing::scratch_dir();
  const auto cfg = testing::write_tiny_run(root, tiny_run());
  // Without held-out documents every evaluation was silently skipped.
  expect_clean_error(agenttune(train_args(cfg, root / "none", "--set train.eval_interval=2")),
                     {"train.eval_interval 2", "data.validation_fraction is 0"});
  const std::string eval = "--set train.eval_interval=2 --set data.validation_fraction=0.1 --set train.eval_batches=1";
  auto quiet = agenttune(train_args(cfg, root / "quiet", eval));
  ASSERT_EQ(quiet.rc, 0) << quiet.out;
  auto shown = agenttune(train_args(cfg, root / "shown", eval, ""));  // the progress line, one per step off a tty
  ASSERT_EQ(shown.rc, 0) << shown.out;
  const auto rows = metrics_rows(root / "quiet");
  ASSERT_EQ(rows.size(), 4u);
  for (int step : {2, 4}) {
    const std::string val = fmt::format("{:.4f}", rows[step - 1]["val_loss"].get<double>());
    EXPECT_NE(quiet.out.find(fmt::format("step {}: val_loss {}", step, val)), std::string::npos) << quiet.out;
    EXPECT_NE(shown.out.find(fmt::format("step {}/4 | loss ", step)), std::string::npos) << shown.out;
    EXPECT_NE(shown.out.find(fmt::format(" | val_loss {} | lr ", val)), std::string::npos) << shown.out;
  }
  EXPECT_EQ(quiet.out.find("step 1: val_loss"), std::string::npos) << quiet.out;

  // Cumulative and per-step counters are named so (`tokens` was cumulative, `trained_tokens` not).
  int64_t total = 0;
  for (const auto& row : rows) {
    EXPECT_FALSE(row.contains("tokens") || row.contains("trained_tokens")) << row;
    const auto step_tokens = row["step_tokens"].get<int64_t>();
    total += step_tokens;
    EXPECT_EQ(row["tokens_total"].get<int64_t>(), total) << row;
    EXPECT_EQ(step_tokens, 4 * 64) << row;  // 4 packed sequences of 64 real tokens
    // A document's last token predicts nothing (no target across documents): a few per step.
    const auto trained = row["step_trained_tokens"].get<int64_t>();
    EXPECT_LT(trained, step_tokens) << row;
    EXPECT_GT(trained, step_tokens - 8) << row;
  }

  // An evaluated step off log_interval's grid still gets its row, with the same val_loss.
  auto sparse = agenttune(train_args(cfg, root / "sparse", eval + " --set train.log_interval=3"));
  ASSERT_EQ(sparse.rc, 0) << sparse.out;
  std::vector<int64_t> steps;
  for (const auto& row : metrics_rows(root / "sparse")) {
    steps.push_back(row["step"].get<int64_t>());
    EXPECT_EQ(row.contains("val_loss"), steps.back() % 2 == 0) << row;
    if (row.contains("val_loss")) EXPECT_EQ(row["val_loss"], rows[steps.back() - 1]["val_loss"]) << row;
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 3, 4}));
}

TEST(SettingsTakeEffect, PlanTakesTheFoldersArchitectureWhenItIsHere) {
  const RunAndModel m;
  const auto& [root, r, cfg, model] = m;
  const std::string plan = "plan --gpus 1 --config " + cfg.string() + " ";
  auto from_folder = agenttune(plan + "--set model.shape=null --set model.init_from=" + model.string());
  ASSERT_EQ(from_folder.rc, 0) << from_folder.out;
  EXPECT_NE(from_folder.out.find("model: L=2 D=64 F=128 heads=4/2 V=2048"), std::string::npos) << from_folder.out;
  expect_clean_error(agenttune(plan + "--set model.init_from=" + model.string() + " --set model.shape.hidden_size=128"),
                     {"model.shape.hidden_size is 128"});
  // A folder not downloaded yet: model.shape stands in, and without one there is nothing to plan.
  auto absent = agenttune(plan + "--set model.init_from=" + (root / "absent").string());
  ASSERT_EQ(absent.rc, 0) << absent.out;
  EXPECT_NE(absent.out.find("model: L=2 D=64 F=128"), std::string::npos) << absent.out;
  expect_clean_error(agenttune(plan + "--set model.shape=null --set model.init_from=" + (root / "absent").string()),
                     {"model.init_from " + (root / "absent").string() + " is not here and model.shape is not set"});
}

}  // namespace
}  // namespace agenttune
