// The eval report (table, JSON, failures with the differing span marked, the scalars training
// writes) on hand-built results, and the eval config's checks, standalone and as the train
// config's `eval:` section. The end-to-end runs are in tests/cli/test_eval_cli.cpp.
#include <gtest/gtest.h>

#include "agenttune/config/load.h"
#include "agenttune/eval/eval_report.h"
#include "agenttune/train/train_config.h"
#include "agenttune/util/error.h"
#include "test_paths.h"

namespace agenttune::eval {
namespace {

TEST(EvalReport, MarkDifferenceMarksTheSpanBetweenCommonPrefixAndSuffix) {
  auto [a, b] = mark_difference("find /srv -size +2M | wc -l", "find /srv -size +1M | wc -l");
  EXPECT_EQ(a, "find /srv -size +⟦2⟧M | wc -l");
  EXPECT_EQ(b, "find /srv -size +⟦1⟧M | wc -l");
  // Insertions mark an empty span in the shorter one.
  std::tie(a, b) = mark_difference("click[buy]", "click[buy now]");
  EXPECT_EQ(a, "click[buy⟦⟧]");
  EXPECT_EQ(b, "click[buy⟦ now⟧]");
  // Whole UTF-8 characters: é (C3 A9) and è (C3 A8) share their first byte.
  std::tie(a, b) = mark_difference("café", "cafè");
  EXPECT_EQ(a, "caf⟦é⟧");
  EXPECT_EQ(b, "caf⟦è⟧");
  std::tie(a, b) = mark_difference("same", "same");
  EXPECT_EQ(a, "same");
  EXPECT_EQ(b, "same");
  std::tie(a, b) = mark_difference("", "answer: 7");
  EXPECT_EQ(a, "⟦⟧");
  EXPECT_EQ(b, "⟦answer: 7⟧");
}

TurnResult turn(AgentTask task, bool negative, bool match, std::string reply_action, std::string gold_action) {
  TurnResult t;
  t.task = task;
  t.negative = negative;
  t.record_id = negative ? "chat_1" : "os_12";
  t.turn = 3;
  t.last_turn = "The output of the OS:\n\n7\n\x1b[?2004h";
  t.reply = "Think: seven.\n\nAct: answer(8)";
  t.score.action_match = match;
  t.score.format_valid = true;
  t.score.calls_tool = negative;
  t.score.reply_action = std::move(reply_action);
  t.score.gold_action = std::move(gold_action);
  t.score.why = match ? "" : "the answer differs";
  t.hallucinated = negative;
  return t;
}

EvalResults sample_results() {
  EvalResults r;
  TaskCounts os;
  os.task = AgentTask::Os;
  os.positives = 4;
  os.format_valid = 4;
  os.action_match = 3;
  os.refused = 1;
  TaskCounts chat;
  chat.task = AgentTask::Chat;
  chat.negatives = 8;
  chat.hallucinated = 2;
  r.tasks = {os, chat};
  r.turns = {turn(AgentTask::Os, false, true, "answer: 7", "answer: 7"),
             turn(AgentTask::Os, false, false, "answer: 8", "answer: 7"),
             turn(AgentTask::Chat, true, false, "bash: ls", "")};
  r.losses = {{"source", "agentinstruct", 0.5, 100}, {"task", "os", 0.25, 40}, {"capability", "untagged", 0.5, 100}};
  r.choices = {{"mmlu_tiny", 10, 0.3, 0.4}};
  return r;
}

TEST(EvalReport, ScalarsAreSharesOfTheirOwnDenominatorAndLeaveOutEmptyOnes) {
  const auto scalars = eval_scalars(sample_results());
  std::map<std::string, double> m(scalars.begin(), scalars.end());
  EXPECT_EQ(m.at("eval/os/format_valid"), 1.0);
  EXPECT_EQ(m.at("eval/os/action_match"), 0.75);
  EXPECT_EQ(m.at("eval/os/refused"), 0.25);
  EXPECT_EQ(m.at("eval/chat/hallucination"), 0.25);
  EXPECT_EQ(m.at("eval/source_agentinstruct/loss"), 0.5);
  EXPECT_EQ(m.at("eval/os/loss"), 0.25);
  EXPECT_EQ(m.at("eval/capability_untagged/loss"), 0.5);
  EXPECT_EQ(m.at("eval/mmlu_tiny/acc"), 0.3);
  EXPECT_EQ(m.at("eval/mmlu_tiny/acc_norm"), 0.4);
  // No turn named a tool, os had no negatives, chat no positives: nothing to divide.
  EXPECT_EQ(m.count("eval/os/tool_valid"), 0u);
  EXPECT_EQ(m.count("eval/os/hallucination"), 0u);
  EXPECT_EQ(m.count("eval/chat/format_valid"), 0u);
  EXPECT_EQ(m.size(), 9u);
}

TEST(EvalReport, JsonAndFailuresListOnlyFailedTurns) {
  const auto r = sample_results();
  const auto j = results_json(r, 5);
  ASSERT_EQ(j["tasks"].size(), 2u);
  EXPECT_EQ(j["tasks"][0]["action_match"], 0.75);
  EXPECT_TRUE(j["tasks"][0]["tool_valid"].is_null());
  EXPECT_TRUE(j["tasks"][0]["hallucination"].is_null());
  ASSERT_EQ(j["failures"].size(), 2u);  // the differing answer and the negative that called a tool
  EXPECT_EQ(j["failures"][0]["gold_action"], "answer: 7");
  EXPECT_EQ(j["failures"][1]["negative"], true);
  EXPECT_FALSE(results_json(r).contains("failures"));

  const auto text = format_turns(r, 1, true);
  EXPECT_NE(text.find("-- os_12 turn 3 (os): the answer differs"), std::string::npos) << text;
  EXPECT_NE(text.find("reply action: answer: ⟦8⟧"), std::string::npos) << text;
  EXPECT_NE(text.find("gold action:  answer: ⟦7⟧"), std::string::npos) << text;
  // Control bytes of an observation are shown, not sent to the terminal.
  EXPECT_NE(text.find("last turn:    The output of the OS:\\n\\n7\\n\\x1b[?2004h"), std::string::npos) << text;
  EXPECT_EQ(text.find("chat_1"), std::string::npos) << "N = 1 printed more than one failure:\n" << text;
  // Every turn, passed ones too.
  const auto all = format_turns(r, 3, false);
  EXPECT_NE(all.find("-- os_12 turn 3 (os): passed"), std::string::npos) << all;
  EXPECT_NE(all.find("reply action: answer: 7\n"), std::string::npos) << all;
  EXPECT_NE(all.find("-- chat_1 turn 3 (chat, negative): the reply calls a tool"), std::string::npos) << all;

  const auto table = format_tables(r);
  EXPECT_NE(table.find("os"), std::string::npos);
  EXPECT_NE(table.find("75.0"), std::string::npos) << table;
  EXPECT_NE(table.find("25.0"), std::string::npos) << table;
  EXPECT_NE(table.find("mmlu_tiny"), std::string::npos) << table;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

EvalConfig eval_config(const std::string& yaml) {
  return load_config_text<EvalConfig>(yaml, ConfigSource{"eval.yaml", testing::source_dir(), {}});
}

TEST(EvalConfigCheck, EveryKeyIsCheckedWithItsName) {
  const std::string records = "records: [{path: data/samples/agentinstruct.jsonl, format: agentinstruct}]\n";
  EXPECT_NO_THROW(eval_config(records + "template: agentlm\ntasks: [os, db]\n"));
  EXPECT_NE(error_of([&] { eval_config(records); }).find("template is required"), std::string::npos);
  EXPECT_NE(error_of([&] { eval_config(records + "template: agentlm\ntasks: [oss]\n"); }).find("os"),
            std::string::npos);
  EXPECT_NE(error_of([&] { eval_config(records + "template: agentlm\nmax_new_token: 3\n"); }).find("max_new_tokens"),
            std::string::npos);
  EXPECT_NE(error_of([&] { eval_config("template: agentlm\n"); }).find("nothing to evaluate"), std::string::npos);
  EXPECT_NE(error_of([&] { eval_config("records: [{path: x.jsonl, format: auto}]\ntemplate: agentlm\n"); })
                .find("records[0].format"),
            std::string::npos);
  EXPECT_NE(error_of([&] { eval_config(records + "template: agentlm\nbatch_size: 0\n"); }).find("batch_size"),
            std::string::npos);
  EXPECT_NE(error_of([&] { eval_config(records + "template: agentlm\nnext_action: false\nheldout_loss: false\n"); })
                .find("nothing is run"),
            std::string::npos);
  EXPECT_NE(error_of([&] { eval_config("multiple_choice: [{path: q.jsonl, shots: -1}]\n"); })
                .find("multiple_choice[0].shots"),
            std::string::npos);
}

TEST(EvalConfigCheck, TrainSectionRunsAtTrainEvalIntervalOnly) {
  const std::string base =
      "output_dir: out\nmodel: {shape: {vocab_size: 300, hidden_size: 32, intermediate_size: 64, "
      "num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2}}\n"
      "data: {sources: [{path: d}], seq_len: 16}\n";
  const std::string section = "eval: {template: agentlm, records: [{path: h.jsonl}]}\n";
  auto load = [&](const std::string& yaml) {
    return load_config_text<TrainConfig>(yaml, ConfigSource{"train.yaml", testing::source_dir(), {}});
  };
  const auto cfg = load(base + "train: {global_batch_sequences: 1, eval_interval: 5}\n" + section);
  ASSERT_TRUE(cfg.eval);
  EXPECT_EQ(cfg.eval->chat_template, "agentlm");
  EXPECT_EQ(cfg.eval->records.at(0).path, testing::source_dir() / "h.jsonl");
  // One interval: the section without train.eval_interval never runs, which is refused.
  EXPECT_NE(error_of([&] { load(base + "train: {global_batch_sequences: 1}\n" + section); })
                .find("train.eval_interval"),
            std::string::npos);
  // eval_interval needs something to evaluate: held-out documents or the section.
  EXPECT_NE(error_of([&] { load(base + "train: {global_batch_sequences: 1, eval_interval: 5}\n"); })
                .find("no `eval:` section"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              load(base + "train: {global_batch_sequences: 1, eval_interval: 5}\neval: {template: agentlm}\n");
            }).find("eval: nothing to evaluate"),
            std::string::npos);
  EXPECT_FALSE(load(base + "train: {global_batch_sequences: 1}\n").eval);
}

}  // namespace
}  // namespace agenttune::eval
