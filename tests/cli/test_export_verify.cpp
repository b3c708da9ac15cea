// `agenttune export` proves itself through the real binary: it reloads what it wrote and compares
// tensors and probe logits with the checkpoint, prints the measured max |Δlogit| and its tolerance,
// and on a mismatch exits 2 leaving nothing under --out (an earlier export there survives). The
// mismatches are made with the test-only AGENTTUNE_TEST_CORRUPT_EXPORT=<tensor> (src/train/export.cpp),
// which flips the sign of every element of one tensor in the written files before the check.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <regex>

#include "agenttune/io/hf_config.h"
#include "agenttune/train/export.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

class ExportVerify : public ::testing::Test {
 protected:
  // A tiny two-step run per test: ctest runs these tests in parallel processes, so a run shared
  // between them would be retrained (and locked) under another test's export.
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    run_root_ = testing::binary_dir() / "test-scratch" / (std::string("ExportVerify.run.") + info->name());
    fs::remove_all(run_root_);
    fs::create_directories(run_root_);
    testing::TinyRun r;
    r.max_steps = 2;
    r.checkpoint = "{interval: 2, keep_last: 1}";
    r.code_docs = 40;
    r.text_docs = 8;
    auto cfg = testing::write_tiny_run(run_root_, r);
    auto t = testing::agenttune("train --config " + cfg.string());
    ASSERT_EQ(t.rc, 0) << t.out;
  }
  fs::path checkpoints() const { return run_root_ / "run" / "checkpoints"; }

  testing::Run export_to(const fs::path& out, const std::string& extra, const std::string& env = "") {
    return testing::agenttune("export --checkpoint " + checkpoints().string() + " --out " + out.string() + " " + extra, env);
  }

  // No hidden temporary folder of an export to `out` is left beside it.
  static void expect_no_temporaries(const fs::path& out) {
    for (auto& e : fs::directory_iterator(out.parent_path()))
      EXPECT_EQ(e.path().filename().string().rfind("." + out.filename().string() + ".export-", 0), std::string::npos)
          << "left behind: " << e.path();
  }

  fs::path run_root_;
};

// The number after `label` in the export's log ("max |Δlogit| = ", "(tolerance ", "max |logit| ").
double number_after(const std::string& log, const std::string& label) {
  auto at = log.find(label);
  return at == std::string::npos ? -1 : std::stod(log.substr(at + label.size()));
}
std::pair<double, double> delta_and_tolerance(const std::string& log) {
  return {number_after(log, "max |Δlogit| = "), number_after(log, "(tolerance ")};
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST_F(ExportVerify, Float32IsExactAndBfloat16WithinTheRoundingTolerance) {
  auto root = testing::scratch_dir();
  auto f32 = export_to(root / "f32", "--dtype float32");
  ASSERT_EQ(f32.rc, 0) << f32.out;
  auto [d32, tol32] = delta_and_tolerance(f32.out);
  EXPECT_EQ(d32, 0.0) << f32.out;  // the masters themselves: bit-identical logits
  EXPECT_EQ(tol32, 0.0) << f32.out;
  EXPECT_NE(f32.out.find("every tensor equal to the checkpoint's rounded to float32"), std::string::npos) << f32.out;

  for (const char* dtype : {"bfloat16", "float16"}) {
    auto r = export_to(root / dtype, std::string("--dtype ") + dtype);
    ASSERT_EQ(r.rc, 0) << r.out;
    auto [d, tol] = delta_and_tolerance(r.out);
    EXPECT_GT(d, 0.0) << r.out;  // rounding the weights does move the logits...
    EXPECT_LE(d, tol) << r.out;  // ...by less than the stated bound
    // The stated bound for 2 layers at the measured logit scale (printed with 3 digits).
    EXPECT_NEAR(tol, export_logits_tolerance(parse_dtype(dtype), 2, number_after(r.out, "max |logit| ")), 0.01 * tol);
    EXPECT_EQ(read_hf_config(root / dtype / "config.json").dtype, parse_dtype(dtype));
    expect_no_temporaries(root / dtype);
  }
}

TEST_F(ExportVerify, CorruptTensorExitsTwoAndLeavesNothing) {
  auto root = testing::scratch_dir();
  auto r = export_to(root / "hf", "--dtype bfloat16", "AGENTTUNE_TEST_CORRUPT_EXPORT=model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("export check failed, nothing written to " + (root / "hf").string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tensor(s) differ from the checkpoint's rounded to bfloat16, first model.layers.1.mlp.up_proj.weight"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(root / "hf"));
  expect_no_temporaries(root / "hf");
}

// A corrupt final norm negates every logit: the logits check alone is far past its tolerance.
TEST_F(ExportVerify, CorruptNormFailsTheLogitsCheckToo) {
  auto root = testing::scratch_dir();
  auto r = export_to(root / "hf", "--dtype bfloat16", "AGENTTUNE_TEST_CORRUPT_EXPORT=model.norm.weight");
  EXPECT_EQ(r.rc, 2) << r.out;
  auto [d, tol] = delta_and_tolerance(r.out);
  EXPECT_GT(tol, 0.0) << r.out;
  EXPECT_GT(d, 10 * tol) << r.out;
  EXPECT_FALSE(fs::exists(root / "hf"));
}

TEST_F(ExportVerify, FailedReexportKeepsThePreviousExportAndAGoodOneReplacesIt) {
  auto root = testing::scratch_dir();
  auto hf = root / "hf";
  ASSERT_EQ(export_to(hf, "--dtype bfloat16 --max-shard-mb 1").rc, 0);
  const auto before = file_bytes(hf / "model.safetensors.index.json");
  ASSERT_FALSE(before.empty());

  auto bad = export_to(hf, "--dtype float32", "AGENTTUNE_TEST_CORRUPT_EXPORT=model.embed_tokens.weight");
  EXPECT_EQ(bad.rc, 2) << bad.out;
  EXPECT_EQ(file_bytes(hf / "model.safetensors.index.json"), before);
  EXPECT_EQ(read_hf_config(hf / "config.json").dtype, at::kBFloat16);
  expect_no_temporaries(hf);

  // A verified re-export replaces the folder whole: no shard of the sharded bf16 export survives.
  auto good = export_to(hf, "--dtype float32");
  ASSERT_EQ(good.rc, 0) << good.out;
  EXPECT_EQ(read_hf_config(hf / "config.json").dtype, at::kFloat);
  EXPECT_FALSE(fs::exists(hf / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(hf / "model.safetensors"));
  expect_no_temporaries(hf);
}

TEST_F(ExportVerify, RefusesToReplaceAFolderThatIsNotAModel) {
  auto root = testing::scratch_dir();
  fs::create_directories(root / "notes");
  std::ofstream(root / "notes" / "mine.txt") << "mine\n";
  auto r = export_to(root / "notes", "");
  EXPECT_EQ(r.rc, 2) << r.out;
  EXPECT_NE(r.out.find("not a model folder"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(root / "notes" / "mine.txt"));
}

TEST_F(ExportVerify, TransformersCheckComparesLogitsAndTokenizerIds) {
  auto model = testing::shared_fixture("llama2-tokenizer.model");
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  if (!fs::exists(testing::venv_python())) GTEST_SKIP() << "no .venv python with transformers";
  auto root = testing::scratch_dir();
  auto r = export_to(root / "hf",
                     "--dtype bfloat16 --verify transformers --python " + testing::venv_python().string() +
                         " --tokenizer " + model.string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("export check: transformers"), std::string::npos) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(its tokenizer gives our [0-9]+ ids on the probe text)"))) << r.out;
  // The default Python is the checkout's .venv, found from the binary's location.
  auto d = export_to(root / "hf2", "--dtype float32 --verify transformers");
  ASSERT_EQ(d.rc, 0) << d.out;
  EXPECT_NE(d.out.find("no tokenizer.model or tokenizer.json in the export"), std::string::npos) << d.out;
}

TEST_F(ExportVerify, TransformersCheckWithoutTransformersSaysSoAndExitsTwo) {
  auto root = testing::scratch_dir();
  auto missing = export_to(root / "a", "--verify transformers --python " + (root / "no-python").string());
  EXPECT_EQ(missing.rc, 2) << missing.out;
  EXPECT_NE(missing.out.find("no-python: no such file"), std::string::npos) << missing.out;
  EXPECT_FALSE(fs::exists(root / "a"));

  // A Python without transformers (Debian's own, outside the venv) is named, not skipped.
  if (!fs::exists("/usr/bin/python3") ||
      testing::run_command("/usr/bin/python3 -c 'import transformers' >/dev/null 2>&1") == 0)
    GTEST_SKIP() << "/usr/bin/python3 is missing or has transformers";
  auto bare = export_to(root / "b", "--verify transformers --python /usr/bin/python3");
  EXPECT_EQ(bare.rc, 2) << bare.out;
  EXPECT_NE(bare.out.find("/usr/bin/python3 has no transformers"), std::string::npos) << bare.out;
  EXPECT_FALSE(fs::exists(root / "b"));
  expect_no_temporaries(root / "b");
}

}  // namespace
}  // namespace agenttune
