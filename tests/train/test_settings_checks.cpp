// The pieces behind issue 22's "every setting takes effect or is an error" on the trainer's side:
// a model.shape beside model.init_from is compared with the folder's architecture (only the
// fields that change the math), and a resume names each schedule or optimizer setting it changes.
#include <gtest/gtest.h>

#include <functional>

#include "agenttune/config/load.h"
#include "agenttune/train/model_fit.h"
#include "agenttune/train/resume_changes.h"
#include "agenttune/train/train_config.h"
#include "error_of.h"

namespace agenttune {
namespace {

using testing::error_of;

LlamaConfig tiny() {
  LlamaConfig c;
  c.vocab_size = 300, c.hidden_size = 96, c.intermediate_size = 64, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 128;
  return c;
}

TEST(ShapeMatch, OnlyTheFieldsThatChangeTheMathCount) {
  const std::filesystem::path file = "/models/tiny/config.json";
  LlamaConfig same = tiny();
  same.dtype = c10::ScalarType::BFloat16;  // storage, not architecture
  same.initializer_range = 0.5;
  same.bos_token_id = 7, same.eos_token_id = 8, same.pad_token_id = 0;
  same.head_dim = 24;  // what 0 means for 96 / 4: config.json files spell it out
  EXPECT_EQ(error_of([&] { check_shape_matches(tiny(), same, file); }), "");

  LlamaConfig asked = tiny();
  asked.hidden_size = 128;
  asked.head_dim = 24;  // the first difference is named, not every one
  EXPECT_EQ(error_of([&] { check_shape_matches(asked, tiny(), file); }),
            "model.shape.hidden_size is 128, but model.init_from /models/tiny has 96 (its config.json); remove "
            "model.shape (the folder decides the architecture) or make it equal");
  LlamaConfig eps = tiny();
  eps.rms_norm_eps = 1e-6;
  const std::string e = error_of([&] { check_shape_matches(eps, tiny(), file); });
  EXPECT_NE(e.find("model.shape.rms_norm_eps is 1.0e-06"), std::string::npos) << e;
  EXPECT_NE(e.find("has 1.0e-05"), std::string::npos) << e;
  LlamaConfig tied = tiny();
  tied.tie_word_embeddings = true;
  EXPECT_NE(error_of([&] { check_shape_matches(tied, tiny(), file); }).find("model.shape.tie_word_embeddings is true"),
            std::string::npos);
}

TEST(ShapeMatch, AFreshModelsArchitectureIsItsShapeInFp32) {
  TrainConfig c;
  c.model.shape = tiny();
  c.model.shape->dtype = c10::ScalarType::BFloat16;
  c.data.seq_len = 128;
  const TrainConfig r = with_fitted_architecture(c);
  ASSERT_TRUE(r.model.shape.has_value());
  EXPECT_EQ(r.model.shape->hidden_size, 96);
  EXPECT_EQ(r.model.shape->dtype, c10::ScalarType::Float);  // the masters' dtype, whatever was asked
  c.data.seq_len = 129;
  EXPECT_NE(error_of([&] { with_fitted_architecture(c); }).find("data.seq_len 129 is longer than the model's 128"),
            std::string::npos);
}

std::string resolved_yaml(const std::function<void(TrainSection&)>& change) {
  TrainConfig c;
  c.model.shape = tiny();
  c.train.lr = 4e-4;
  change(c.train);
  return dump_config(c);
}

TEST(ResumeChanges, EachChangedScheduleSettingIsOneLineWithOldAndNew) {
  const std::string before = resolved_yaml([](TrainSection&) {});
  EXPECT_TRUE(schedule_changes(before, before, 7).empty());
  // The batch split is not the schedule's: a resume may change it without a word.
  EXPECT_TRUE(schedule_changes(before, resolved_yaml([](TrainSection& t) { t.micro_batch_size = 4; }), 7).empty());
  const auto lines = schedule_changes(before, resolved_yaml([](TrainSection& t) {
    t.lr = 1e-4, t.warmup_steps = 50, t.decay = LrDecay::Linear;
  }), 7);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "resume: train.lr changed 0.0004 -> 0.0001 (the run continues from step 7 with the new value)");
  EXPECT_EQ(lines[1], "resume: train.warmup_steps changed 0 -> 50 (the run continues from step 7 with the new value)");
  EXPECT_EQ(lines[2], "resume: train.decay changed cosine -> linear (the run continues from step 7 with the new value)");
  // A checkpoint without a stored config (or an older one without the key) compares nothing.
  EXPECT_TRUE(schedule_changes("", before, 7).empty());
  EXPECT_TRUE(schedule_changes("train: {lr: 0.0004}\n", before, 7).empty());
}

}  // namespace
}  // namespace agenttune
