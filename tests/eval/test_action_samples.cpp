// Every trained assistant turn of the bundled samples (data/samples), scored against itself under
// its record's task, is format-valid and matches; scored against the next trained turn of the same
// record it does not (so the overfit test's 0.9 / 0.8 bars measure learning, not the scorer).
#include "agenttune/data/heldout.h"
#include "agenttune/readers/dataset.h"
#include "test_action_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

struct SampleFile {
  const char* name;
  DatasetFormat format;
};

constexpr SampleFile kSamples[] = {{"agentinstruct.jsonl", DatasetFormat::AgentInstruct},
                                   {"agentflan.jsonl", DatasetFormat::AgentFlan},
                                   {"toolbench_sft.json", DatasetFormat::ToolBench},
                                   {"sharegpt.json", DatasetFormat::ShareGPT},
                                   {"openai_messages.jsonl", DatasetFormat::OpenAI}};

std::vector<Conversation> read_sample(const SampleFile& f) {
  ReadReport report;
  return read_dataset(DatasetSpec{"samples", {testing::source_dir() / "data" / "samples" / f.name}, f.format, {}}, report);
}

Conversation prefix(const Conversation& c, size_t turns) {
  Conversation h = c;
  h.turns.resize(turns);
  return h;
}

TEST(ActionSamples, GoldTurnsScoreAsValidMatchesAgainstThemselves) {
  std::map<std::string, int> scored, syntaxes;
  for (const SampleFile& f : kSamples) {
    for (const Conversation& c : read_sample(f)) {
      const AgentTask task = task_of(c, f.format);
      for (size_t i = 0; i < c.turns.size(); ++i) {
        if (!trains(c.turns[i])) continue;
        const std::string& gold = c.turns[i].content;
        auto s = eval::score_action(task, prefix(c, i), gold, gold);
        EXPECT_TRUE(s.format_valid) << f.name << " " << c.id << " turn " << i << ": " << s.why;
        EXPECT_TRUE(s.action_match) << f.name << " " << c.id << " turn " << i << ": " << s.why;
        EXPECT_NE(s.tool_valid, std::optional<bool>(false)) << c.id << " turn " << i << ": " << s.why;
        EXPECT_NE(s.args_valid, std::optional<bool>(false)) << c.id << " turn " << i << ": " << s.why;
        EXPECT_FALSE(s.gold_action.empty()) << c.id << " turn " << i;
        if (is_negative(c)) EXPECT_FALSE(eval::hallucinates(s, /*negative=*/true)) << c.id;
        // AgentInstruct and ToolBench gold turns follow their task's syntax (no chat fallback).
        if (task != AgentTask::AgentFlan && task != AgentTask::Chat) EXPECT_EQ(s.syntax, task_name(task)) << c.id;
        if (task == AgentTask::Chat) EXPECT_EQ(s.syntax, "chat") << c.id;
        ++scored[task_name(task)];
        ++syntaxes[task == AgentTask::AgentFlan ? "agentflan " + s.syntax : s.syntax];
      }
    }
  }
  // Each task the samples hold was reached (AgentInstruct: os, db, webshop, alfworld).
  for (const char* task : {"os", "db", "webshop", "alfworld", "toolbench", "agentflan", "chat"})
    EXPECT_GT(scored[task], 0) << task;
  // Agent-FLAN's sample holds ReAct turns of OS, WebShop and ToolBench, and chat-form turns.
  for (const char* syntax : {"agentflan os", "agentflan webshop", "agentflan toolbench", "agentflan chat"})
    EXPECT_GT(syntaxes[syntax], 0) << syntax;
}

TEST(ActionSamples, ConsecutiveGoldTurnsDoNotMatchEachOther) {
  int pairs = 0;
  for (const SampleFile& f : kSamples) {
    for (const Conversation& c : read_sample(f)) {
      const AgentTask task = task_of(c, f.format);
      std::optional<size_t> last;
      for (size_t i = 0; i < c.turns.size(); ++i) {
        if (!trains(c.turns[i])) continue;
        if (last && c.turns[*last].content != c.turns[i].content) {
          auto s = eval::score_action(task, prefix(c, i), c.turns[*last].content, c.turns[i].content);
          EXPECT_FALSE(s.action_match) << f.name << " " << c.id << " turns " << *last << "/" << i << ": " << s.reply_action;
          ++pairs;
        }
        last = i;
      }
    }
  }
  EXPECT_GT(pairs, 10);
}

}  // namespace
}  // namespace agenttune
