// Issue 22, "every setting takes effect or is an error", at load time: a fresh model needs its
// model.shape (it used to default silently to Llama-7B's), model.shape is optional beside
// model.init_from and survives a dump and reload as unset, and train.eval_interval without a
// validation split (which evaluated nothing) is refused naming both keys.
#include <gtest/gtest.h>

#include "agenttune/config/load.h"
#include "agenttune/train/train_config.h"
#include "config_test_util.h"

namespace agenttune {
namespace {

using testing::error_of;
using testing::write_yaml;

constexpr const char* kShape =
    "  shape: {vocab_size: 300, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1,\n"
    "          num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128}\n";

std::string train_yaml(const std::string& model_lines) {
  return "output_dir: run\nmodel:\n" + model_lines +
         "data:\n  sources: [{name: a, path: a}]\n  seq_len: 64\n"
         "train: {max_steps: 2, micro_batch_size: 1, global_batch_sequences: 1}\n";
}

TEST(TrainSettings, AFreshModelNeedsItsShape) {
  auto path = write_yaml("no_shape.yaml", train_yaml("  init_seed: 3\n"));
  const std::string e = error_of([&] { load_config<TrainConfig>(path); });
  EXPECT_NE(e.find(path.string() + ": set model.shape"), std::string::npos) << e;
  EXPECT_NE(e.find("or model.init_from"), std::string::npos) << e;
  const auto cfg = load_config<TrainConfig>(write_yaml("shape.yaml", train_yaml(kShape)));
  ASSERT_TRUE(cfg.model.shape.has_value());
  EXPECT_EQ(cfg.model.shape->hidden_size, 32);
  EXPECT_EQ(cfg.model.shape->vocab_size, 300);
}

TEST(TrainSettings, ShapeIsOptionalBesideInitFromAndStaysUnsetThroughADump) {
  auto path = write_yaml("init_from.yaml", train_yaml("  init_from: /models/llama\n"));
  const auto cfg = load_config<TrainConfig>(path);
  EXPECT_FALSE(cfg.model.shape.has_value());
  const std::string dumped = dump_config(cfg);
  EXPECT_NE(dumped.find("shape: null"), std::string::npos) << dumped;
  const auto back = load_config_text<TrainConfig>(dumped, ConfigSource{"dumped.yaml", path.parent_path(), {}});
  EXPECT_FALSE(back.model.shape.has_value());
  // A shape given beside init_from is read (model_fit compares it with the folder's).
  const auto both = load_config<TrainConfig>(path, {"model.shape.hidden_size=128"});
  ASSERT_TRUE(both.model.shape.has_value());
  EXPECT_EQ(both.model.shape->hidden_size, 128);
  // And it is still checked for consistency on its own.
  const std::string e = error_of([&] { load_config<TrainConfig>(path, {"model.shape.num_attention_heads=0"}); });
  EXPECT_NE(e.find("(model.shape)"), std::string::npos) << e;
}

TEST(TrainSettings, EvalIntervalWithoutAValidationSplitIsAnError) {
  auto path = write_yaml("eval.yaml", train_yaml(kShape));
  EXPECT_EQ(load_config<TrainConfig>(path).train.eval_interval, 0);  // the default evaluates nothing, knowingly
  const std::string e = error_of([&] { load_config<TrainConfig>(path, {"train.eval_interval=5"}); });
  EXPECT_NE(e.find(path.string() + ": train.eval_interval 5 evaluates the validation loss on held-out documents or "
                                   "the `eval:` section, but data.validation_fraction is 0 (none are held out) and "
                                   "there is no `eval:` section"),
            std::string::npos)
      << e;
  const auto ok = load_config<TrainConfig>(path, {"train.eval_interval=5", "data.validation_fraction=0.1"});
  EXPECT_EQ(ok.train.eval_interval, 5);
}

// model.activation_checkpointing was a boolean: a config that still says true or false is told
// which mode each meant, with the file and line; the three modes load.
TEST(TrainSettings, ActivationCheckpointingBooleansNameTheirModes) {
  for (const char* old : {"true", "false"}) {
    auto path = write_yaml(std::string("ac_") + old + ".yaml",
                           train_yaml(std::string(kShape) + "  activation_checkpointing: " + old + "\n"));
    const std::string e = error_of([&] { load_config<TrainConfig>(path); });
    EXPECT_NE(e.find(path.string() + ":"), std::string::npos) << e;
    EXPECT_NE(e.find("model.activation_checkpointing: expected one of none, selective, full"), std::string::npos) << e;
    EXPECT_NE(e.find("use full (was true) or none (was false)"), std::string::npos) << e;
  }
  auto path = write_yaml("ac.yaml", train_yaml(kShape));
  EXPECT_EQ(load_config<TrainConfig>(path).model.activation_checkpointing, Recompute::None);
  for (Recompute mode : {Recompute::None, Recompute::Selective, Recompute::Full})
    EXPECT_EQ(load_config<TrainConfig>(path, {"model.activation_checkpointing=" + enum_name(mode)}).model.activation_checkpointing,
              mode);
}

}  // namespace
}  // namespace agenttune
