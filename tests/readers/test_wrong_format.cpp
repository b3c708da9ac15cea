// A file read with another schema's `format` is refused, naming the record, the field that gave
// it away and the format to use, instead of parsing and training the wrong turns (issue 22,
// item 5: AgentInstruct read as ShareGPT trained its loss=false "Ok." turns, exit 0).
#include "readers_test_util.h"

namespace agenttune {
namespace {

using testing::error_of;
using testing::expect_contains;
using testing::read_one;
using testing::sample;
using testing::write_file;

TEST(WrongFormat, AgentInstructReadAsShareGptIsRefusedInsteadOfTrainingItsOkTurns) {
  // Before: 5 conversations, the "Ok." reply after the protocol prompt trained (loss unset).
  const auto path = sample("agentinstruct.jsonl");
  EXPECT_EQ(error_of(path, DatasetFormat::ShareGPT),
            path.string() +
                ": record 0 (line 1): field 'conversations[0].loss': looks like AgentInstruct (per-turn "
                "`loss`), but the file is read as sharegpt (as configured): use format: agentinstruct");
  // bad_record: drop is for broken records; a wrong format is not dropped record by record.
  ReadPolicies drop;
  drop.bad_record = OnProblem::Drop;
  expect_contains(error_of(path, DatasetFormat::ShareGPT, drop), {"use format: agentinstruct"});
}

struct Case {
  const char* file;
  DatasetFormat read_as;
  std::vector<std::string> expected;  // fragments of the error; empty: reads without one
};

TEST(WrongFormat, EachSampleReadAsEveryOtherFormat) {
  using F = DatasetFormat;
  const Case cases[] = {
      {"agentinstruct.jsonl", F::ToolBench, {"record 0", "'conversations[0].loss'", "use format: agentinstruct"}},
      {"agentinstruct.jsonl", F::AgentFlan,
       {"record 0", "field 'conversations': looks like AgentInstruct (`conversations` instead of `conversation`)",
        "use format: agentinstruct"}},
      {"agentinstruct.jsonl", F::OpenAI, {"`conversations` instead of `messages`", "use format: agentinstruct"}},
      // Plain ShareGPT is AgentInstruct without loss flags: every assistant turn trains either way.
      {"sharegpt.json", F::AgentInstruct, {}},
      {"sharegpt.json", F::AgentFlan, {"record 0", "looks like ShareGPT", "use format: sharegpt"}},
      {"sharegpt.json", F::OpenAI, {"record 0", "looks like ShareGPT", "use format: sharegpt"}},
      // Step 1 has no function turn yet and reads the same as ShareGPT; step 2 gives it away.
      {"toolbench_sft.json", F::ShareGPT,
       {"record 1", "field 'conversations[3].from': looks like ToolBench (a `from: function` turn)",
        "read as sharegpt", "use format: toolbench"}},
      {"toolbench_sft.json", F::AgentInstruct, {"record 1", "'conversations[3].from'", "use format: toolbench"}},
      {"toolbench_sft.json", F::AgentFlan, {"record 0", "use format: toolbench"}},
      {"toolbench_sft.json", F::OpenAI, {"record 0", "use format: toolbench"}},
      {"agentflan.jsonl", F::ShareGPT,
       {"record 0", "field 'conversation': looks like Agent-FLAN (`conversation` instead of `conversations`)",
        "use format: agentflan"}},
      {"agentflan.jsonl", F::AgentInstruct, {"record 0", "use format: agentflan"}},
      {"agentflan.jsonl", F::ToolBench, {"record 0", "use format: agentflan"}},
      {"agentflan.jsonl", F::OpenAI, {"`conversation` instead of `messages`", "use format: agentflan"}},
      {"openai_messages.jsonl", F::ShareGPT,
       {"record 0", "field 'messages': looks like OpenAI messages", "use format: openai"}},
      {"openai_messages.jsonl", F::AgentInstruct, {"use format: openai"}},
      {"openai_messages.jsonl", F::ToolBench, {"use format: openai"}},
      {"openai_messages.jsonl", F::AgentFlan, {"`messages` instead of `conversation`", "use format: openai"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.file) + " as " + format_name(c.read_as));
    const auto msg = error_of(sample(c.file), c.read_as);
    if (c.expected.empty()) {
      EXPECT_EQ(msg, "");
      continue;
    }
    expect_contains(msg, {sample(c.file).string() + ": record "});
    for (const auto& e : c.expected) expect_contains(msg, {e});
  }
  // Not every wrong choice is another schema's mark: ShareGPT's human/gpt are simply not ToolBench
  // roles, and the unknown-role error says so.
  auto msg = error_of(sample("sharegpt.json"), DatasetFormat::ToolBench);
  expect_contains(msg, {"unknown role 'human'"});
  EXPECT_EQ(msg.find("use format"), std::string::npos) << msg;
}

TEST(WrongFormat, ToolBenchFunctionTurnsAreNotSilentlyDroppedAsShareGpt) {
  // Before: with unknown_roles: drop and alternation: merge, the API results vanished and the
  // steps around them were glued into one assistant turn, exit 0.
  ReadPolicies lenient;
  lenient.roles.unknown = OnProblem::Drop;
  lenient.alternation = Alternation::Merge;
  expect_contains(error_of(sample("toolbench_sft.json"), DatasetFormat::ShareGPT, lenient),
                  {"record 1", "'conversations[3].from'", "use format: toolbench"});
}

TEST(WrongFormat, AFileWhoseLaterRecordsChangeSchemaSaysWhereTheFormatCameFrom) {
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "mixed.jsonl",
                         R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})" "\n"
                         R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a","loss":false}]})" "\n");
  EXPECT_EQ(error_of(path, DatasetFormat::Auto),
            path.string() +
                ": record 1 (line 2): field 'conversations[1].loss': looks like AgentInstruct (per-turn "
                "`loss`), but the file is read as sharegpt (as detected from record 0): use format: agentinstruct");
  // The advice holds: AgentInstruct reads a record without loss flags as ShareGPT does.
  auto cs = read_one(path, DatasetFormat::AgentInstruct);
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_TRUE(trains(cs[0].turns[1]));
  EXPECT_FALSE(trains(cs[1].turns[1]));
}

TEST(WrongFormat, FieldsOptionalInTheChosenSchemaDoNotTrip) {
  auto dir = testing::scratch_dir();
  const std::pair<const char*, DatasetFormat> fine[] = {
      // OpenAI: our own loss flag and OpenAI's weight.
      {R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","loss":false,"weight":0},)"
       R"({"role":"user","content":"r"},{"role":"assistant","content":"b"}]})",
       DatasetFormat::OpenAI},
      // Agent-FLAN: loss present or absent.
      {R"({"conversation":[{"role":"user","content":"q","loss":false},{"role":"assistant","content":"a"}]})",
       DatasetFormat::AgentFlan},
      // AgentInstruct: loss absent on every turn.
      {R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})", DatasetFormat::AgentInstruct},
      // ToolBench: a "Step N" id without a function turn, read as ShareGPT (user/assistant are aliases).
      {R"({"id":"Step 1: q","conversations":[{"from":"user","value":"q"},{"from":"assistant","value":"a"}]})",
       DatasetFormat::ShareGPT},
  };
  int i = 0;
  for (const auto& [record, format] : fine) {
    SCOPED_TRACE(record);
    auto path = write_file(dir, "fine" + std::to_string(i++) + ".jsonl", std::string(record) + "\n");
    EXPECT_EQ(error_of(path, format), "");
    EXPECT_EQ(error_of(path, DatasetFormat::Auto), "");
  }
}

TEST(WrongFormat, AutoDetectionAndTheRefusalAgreeOnARecordWithBothMarks) {
  // A per-turn loss and a function turn: auto calls it AgentInstruct, so AgentInstruct does not
  // refuse it (its function turn is an unknown role) while ToolBench and ShareGPT point there.
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "both.jsonl",
                         R"({"conversations":[{"from":"human","value":"q","loss":null},)"
                         R"({"from":"gpt","value":"a","loss":true},{"from":"function","value":"r","loss":null},)"
                         R"({"from":"gpt","value":"b","loss":true}]})" "\n");
  ReadReport report;
  auto cs = testing::read_paths({path}, DatasetFormat::Auto, report, [] {
    ReadPolicies p;
    p.roles.unknown = OnProblem::Drop;
    p.alternation = Alternation::Merge;
    return p;
  }());
  ASSERT_EQ(report.files.size(), 1u);
  EXPECT_EQ(report.files[0].second, DatasetFormat::AgentInstruct);
  expect_contains(error_of(path, DatasetFormat::AgentInstruct), {"unknown role 'function'"});
  expect_contains(error_of(path, DatasetFormat::ToolBench), {"'conversations[0].loss'", "use format: agentinstruct"});
  expect_contains(error_of(path, DatasetFormat::ShareGPT), {"use format: agentinstruct"});
}

}  // namespace
}  // namespace agenttune
