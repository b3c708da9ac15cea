// Multiple-choice likelihood scoring against lm-evaluation-harness itself: tests/eval/py/
// lm_eval_oracle.py runs lm-eval (pinned) offline on local task files over a tiny random Llama with
// the Llama-2 tokenizer; agenttune scores the same files on the same model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>

#include "agenttune/config/load.h"
#include "agenttune/eval/eval_run.h"
#include "agenttune/eval/likelihood.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/util/files.h"
#include "error_of.h"
#include "test_paths.h"

namespace agenttune::eval {
namespace {

namespace fs = std::filesystem;
using agenttune::testing::binary_dir;
using agenttune::testing::source_dir;

// ctest runs the oracle once (oracle.lm_eval, a FIXTURES_SETUP test); a test binary run by hand
// makes it when oracle.json is missing or older than the script.
fs::path lm_eval_root() {
  static std::once_flag once;
  static const fs::path root = binary_dir() / "test-scratch" / "lm_eval_oracle";
  std::call_once(once, [] {
    const auto script = source_dir() / "tests/eval/py/lm_eval_oracle.py";
    if (fs::exists(root / "oracle.json") && fs::last_write_time(root / "oracle.json") >= fs::last_write_time(script))
      return;
    const auto tok = testing::shared_fixture("llama2-tokenizer.model");
    if (tok.empty()) return;
    std::string out;
    if (testing::run_command(testing::venv_python().string() + " " + script.string() + " " + tok.string() + " " +
                                 root.string(), &out) != 0)
      throw std::runtime_error("lm_eval_oracle.py failed:\n" + out);
  });
  return root;
}

class LmEvalOracle : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::shared_fixture("llama2-tokenizer.model").empty())
      GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
    root_ = lm_eval_root();
    oracle_ = nlohmann::json::parse(read_text_file(root_ / "oracle.json"));
    model_ = plain_eval_model(load_pretrained(root_ / "model").model);
    tok_ = std::make_unique<Tokenizer>(Tokenizer::load(root_ / "model" / "tokenizer.model"));
  }

  // Scores `file` as lm-eval's `task` was run and checks every number it logged.
  void check(const std::string& task, const std::string& file, const std::string& dev_file,
             const MultipleChoiceOptions& o) {
    const auto& ref = oracle_.at(task);
    ASSERT_EQ(ref.at("shots").get<int64_t>(), o.shots);
    const auto questions = read_choice_questions(root_ / "data" / file);
    const auto dev = dev_file.empty() ? std::vector<ChoiceQuestion>{} : read_choice_questions(root_ / "data" / dev_file);
    const auto got = score_multiple_choice(*model_, *tok_, questions, dev, o);
    ASSERT_EQ(got.questions.size(), ref.at("loglik").size());
    int64_t norm_differs = 0;
    double max_diff = 0;
    for (size_t q = 0; q < got.questions.size(); ++q) {
      const auto want = ref.at("loglik")[q].get<std::vector<double>>();
      ASSERT_EQ(got.questions[q].loglik.size(), want.size());
      for (size_t c = 0; c < want.size(); ++c) {
        EXPECT_NEAR(got.questions[q].loglik[c], want[c], 1e-4) << task << " question " << q << " choice " << c;
        max_diff = std::max(max_diff, std::abs(got.questions[q].loglik[c] - want[c]));
      }
      norm_differs += got.questions[q].predicted != got.questions[q].predicted_norm;
    }
    std::printf("%s: %zu questions, max |loglik - lm-eval| = %.3g, acc %.4f acc_norm %.4f\n", task.c_str(),
                got.questions.size(), max_diff, got.acc, got.acc_norm);
    EXPECT_DOUBLE_EQ(got.acc, ref.at("acc").get<double>()) << task;
    EXPECT_DOUBLE_EQ(got.acc_norm, ref.at("acc_norm").get<double>()) << task;
    if (o.style == ChoiceStyle::Letters) EXPECT_EQ(norm_differs, 0);  // one character per letter
  }

  fs::path root_;
  nlohmann::json oracle_;
  std::unique_ptr<EvalModel> model_;
  std::unique_ptr<Tokenizer> tok_;
};

MultipleChoiceOptions mmlu(int64_t shots) {
  MultipleChoiceOptions o;
  o.shots = shots;
  o.description = "The following are multiple choice questions (with answers) about {subject}.\n\n";
  return o;
}

TEST_F(LmEvalOracle, MmluLettersWithDevShotsEqualLmEval) {
  auto o = mmlu(2);
  o.batch_size = 3;  // batches that mix questions and a short last batch
  check("letters", "letters_test.jsonl", "letters_dev.jsonl", o);
}

TEST_F(LmEvalOracle, ChoiceTextsWithShotsFromTheSameFileEqualLmEval) {
  MultipleChoiceOptions o;
  o.style = ChoiceStyle::Texts;
  o.shots = 1;
  o.batch_size = 5;
  check("texts", "texts_test.jsonl", "", o);
}

TEST_F(LmEvalOracle, PromptsAreLmEvalsContexts) {
  const auto questions = read_choice_questions(root_ / "data" / "letters_test.jsonl");
  const auto dev = read_choice_questions(root_ / "data" / "letters_dev.jsonl");
  const auto& want = oracle_.at("letters").at("contexts");
  for (size_t q = 0; q < questions.size(); ++q)
    EXPECT_EQ(choice_context(questions[q], {&dev[0], &dev[1]}, mmlu(2)), want[q].get<std::string>()) << q;
}

TEST_F(LmEvalOracle, LeftTruncationKeepsTheScoredTokens) {
  // A window shorter than the prompt drops context from the left, as lm-eval does: the scores
  // change but stay finite, and a window that fits changes nothing.
  const auto questions = read_choice_questions(root_ / "data" / "letters_test.jsonl");
  auto o = mmlu(0);
  const auto full = score_multiple_choice(*model_, *tok_, questions, {}, o);
  o.max_length = 512;
  const auto same = score_multiple_choice(*model_, *tok_, questions, {}, o);
  o.max_length = 8;
  const auto cut = score_multiple_choice(*model_, *tok_, questions, {}, o);
  for (size_t q = 0; q < questions.size(); ++q)
    for (size_t c = 0; c < questions[q].choices.size(); ++c) {
      EXPECT_NEAR(same.questions[q].loglik[c], full.questions[q].loglik[c], 1e-5);
      EXPECT_TRUE(std::isfinite(cut.questions[q].loglik[c]));
      EXPECT_GT(std::abs(cut.questions[q].loglik[c] - full.questions[q].loglik[c]), 1e-6);
    }
}

// The eval config's `style` reaches the scorer. Each question offers a one-character choice and a
// long one, the long one right: per token the random model is equally unsure of both, so its summed
// log-likelihood is far lower and acc picks the short choice, while acc_norm (per character) picks
// the long one. As letters both continuations are one letter, so acc_norm equals acc.
TEST_F(LmEvalOracle, ConfigStyleTextsScoresChoiceTextsAndNormalisesPerCharacter) {
  const auto dir = testing::scratch_dir();
  std::string lines;
  for (const char* q : {"Which one is right?", "Pick the answer.", "What fits best?", "Choose one."})
    lines += std::string(R"({"question": ")") + q +
             R"(", "choices": ["x", "a considerably longer answer made of several ordinary words"], "answer": 1})" + "\n";
  write_file_atomic(dir / "lengths.jsonl", lines);
  auto run = [&](const std::string& style) {
    const auto cfg = load_config_text<EvalConfig>(
        "multiple_choice: [{name: lengths, path: lengths.jsonl" + style + "}]\n", ConfigSource{"eval.yaml", dir, {}});
    const auto in = load_eval_inputs(cfg, root_ / "model" / "tokenizer.model", model_->config().vocab_size,
                                     model_->config().eos_token_ids());
    return run_eval(*model_, in).choices.at(0);
  };
  const auto texts = run(", style: texts");
  MultipleChoiceOptions o;
  o.style = ChoiceStyle::Texts;
  const auto direct = score_multiple_choice(*model_, *tok_, read_choice_questions(dir / "lengths.jsonl"), {}, o);
  EXPECT_DOUBLE_EQ(texts.acc, direct.acc);  // the config's texts is the lm-eval-checked scorer's
  EXPECT_DOUBLE_EQ(texts.acc_norm, direct.acc_norm);
  EXPECT_EQ(texts.acc, 0.0);
  EXPECT_EQ(texts.acc_norm, 1.0);
  for (const auto& letters : {run(""), run(", style: letters")}) EXPECT_EQ(letters.acc, letters.acc_norm);
  EXPECT_NE(testing::error_of([&] { run(", style: words"); }).find("style"), std::string::npos);
}

TEST(ChoiceQuestions, FileErrorsNameLineAndField) {
  const auto dir = testing::scratch_dir();
  auto write = [&](const std::string& text) {
    write_file_atomic(dir / "q.jsonl", text);
    return testing::error_of([&] { read_choice_questions(dir / "q.jsonl"); });
  };
  const std::string ok = R"({"question": "q", "choices": ["a", "b"], "answer": "B"})";
  EXPECT_EQ(write(ok + "\n"), "");
  EXPECT_EQ(read_choice_questions(dir / "q.jsonl").at(0).answer, 1);
  EXPECT_NE(write(ok + "\n" + R"({"question": "q", "choices": ["a", "b"], "answer": "C"})").find("line 2: field 'answer'"),
            std::string::npos);
  EXPECT_NE(write(R"({"question": "q", "choices": ["a"], "answer": 0})").find("line 1: field 'choices'"),
            std::string::npos);
  EXPECT_NE(write(R"({"choices": ["a", "b"], "answer": 0})").find("field 'question'"), std::string::npos);
  EXPECT_NE(write("\n").find("no multiple-choice questions"), std::string::npos);
}

}  // namespace
}  // namespace agenttune::eval
