// Config files a hostile or careless user writes (issue 14): a top level that is not a mapping,
// bytes that are not UTF-8 in a string value, and values that only make sense with the model
// (seq_len past its positions, a NaN guard that can never trip). Each is one message naming the
// file, the line where there is one, and the key.
#include <gtest/gtest.h>

#include "agenttune/config/load.h"
#include "agenttune/data/prepare_config.h"
#include "agenttune/model/init_config.h"
#include "agenttune/train/train_config.h"
#include "config_test_util.h"

namespace agenttune {
namespace {

using testing::error_of;
using testing::write_yaml;

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

TEST(ConfigRobustness, EveryLoaderRefusesATopLevelThatIsNotAMapping) {
  const std::pair<std::string, std::string> cases[] = {
      {"hello\n", ":1: (top level): expected a mapping, got 'hello'"},
      {"- a\n- b\n", ":1: (top level): expected a mapping, got a list"},
      {"42", ":1: (top level): expected a mapping, got '42'"},
  };
  for (const auto& [yaml, expected] : cases) {
    auto path = write_yaml("root.yaml", yaml);
    EXPECT_TRUE(contains(error_of([&] { load_config<PrepareConfig>(path); }), path.string() + expected));
    EXPECT_TRUE(contains(error_of([&] { load_config<TrainConfig>(path); }), path.string() + expected));
    EXPECT_TRUE(contains(error_of([&] { load_config<InitConfig>(path); }), path.string() + expected));
    // What prepare and inspect ask before choosing a loader goes through the same check.
    EXPECT_TRUE(contains(error_of([&] { config_has_key(path, "datasets"); }), path.string() + expected));
  }
  // An empty file is an empty mapping: no keys, the loaders' own "required" messages apply.
  EXPECT_FALSE(config_has_key(write_yaml("empty.yaml", ""), "datasets"));
  EXPECT_TRUE(config_has_key(write_yaml("sft.yaml", "datasets: []\n"), "datasets"));
}

TEST(ConfigRobustness, AStringThatIsNotUtf8IsNamedWithFileLineAndKey) {
  auto path = write_yaml("bad_utf8.yaml",
                         "tokenizer: t.model\ncorpora:\n  - name: c\n    inputs: [a.jsonl]\n    output: out\n"
                         "    text_field: te\xff" "xt\n");
  EXPECT_TRUE(contains(error_of([&] { load_config<PrepareConfig>(path); }),
                       path.string() + ":6: corpora[0].text_field: expected a string (UTF-8), got 'te\\xFFxt'"));
  // --set values are checked the same way, and named by the override.
  auto good = write_yaml("good.yaml", "tokenizer: t.model\ncorpora:\n  - {name: c, inputs: [a.jsonl], output: out}\n");
  EXPECT_TRUE(contains(error_of([&] { load_config<PrepareConfig>(good, {"corpora.0.name=\xc3\x28"}); }),
                       "--set corpora.0.name=\xc3\x28: corpora[0].name: expected a string (UTF-8), got '\\xC3('"));
}

constexpr const char* kTrain = R"(output_dir: run
model:
  shape: {vocab_size: 300, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1,
          num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128}
data:
  sources: [{name: a, path: a}]
  seq_len: 128
train: {max_steps: 1, global_batch_sequences: 1}
)";

TEST(ConfigRobustness, SeqLenMustFitTheModelsPositionsUnlessRopeScalingCoversIt) {
  auto path = write_yaml("train.yaml", kTrain);
  load_config<TrainConfig>(path);  // 128 of 128
  EXPECT_TRUE(contains(error_of([&] { load_config<TrainConfig>(path, {"data.seq_len=256"}); }),
                       path.string() + " (model.shape): data.seq_len 256 is longer than the model's 128 positions "
                                       "(max_position_embeddings 128)"));
  // Linear RoPE scaling by 2 stretches the 128 trained positions to 256.
  load_config<TrainConfig>(path, {"data.seq_len=256", "model.shape.rope_scaling_factor=2"});
  EXPECT_TRUE(contains(
      error_of([&] { load_config<TrainConfig>(path, {"data.seq_len=257", "model.shape.rope_scaling_factor=2"}); }),
      "data.seq_len 257 is longer than the model's 256 positions (max_position_embeddings 128 x linear "
      "rope_scaling factor 2)"));
}

TEST(ConfigRobustness, MaxNonfiniteInARowMustBeAtLeastOne) {
  auto path = write_yaml("train.yaml", kTrain);
  load_config<TrainConfig>(path, {"train.max_nonfinite_in_a_row=1"});
  EXPECT_TRUE(contains(error_of([&] { load_config<TrainConfig>(path, {"train.max_nonfinite_in_a_row=0"}); }),
                       path.string() + ": train.max_nonfinite_in_a_row must be at least 1"));
}

// Issue 11: values that would only fail on a GPU (or fail there silently) are refused at load.
TEST(ConfigRobustness, DeviceDtypeAndPeakAreCheckedAtLoad) {
  auto path = write_yaml("train.yaml", kTrain);
  load_config<TrainConfig>(path, {"dist.device=cuda:1", "metrics.peak_tflops=989", "model.compute_dtype=bf16"});
  EXPECT_TRUE(contains(error_of([&] { load_config<TrainConfig>(path, {"dist.device=gpu"}); }),
                       path.string() + ": dist.device 'gpu' is not one of: auto, cpu, cuda, cuda:N"));
  EXPECT_TRUE(contains(error_of([&] { load_config<TrainConfig>(path, {"dist.device=cuda:one"}); }),
                       "dist.device 'cuda:one': the device index after ':' must be a number"));
  EXPECT_TRUE(contains(error_of([&] { load_config<TrainConfig>(path, {"model.compute_dtype=fp16"}); }),
                       "model.compute_dtype fp16 needs loss scaling, which training does not do; use bf16"));
  EXPECT_TRUE(contains(error_of([&] { load_config<TrainConfig>(path, {"metrics.peak_tflops=-1"}); }),
                       "metrics.peak_tflops must be >= 0"));
}

}  // namespace
}  // namespace agenttune
