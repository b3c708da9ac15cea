// Policies turn some problems into counted repairs or drops; the counts and the first messages
// land in the ReadReport, and only kept records contribute their repairs.
#include "readers_test_util.h"

namespace agenttune {
namespace {

using testing::expect_contains;
using testing::read_paths;
using testing::write_file;
using Counts = std::map<std::string, int64_t>;

std::string sg(const std::string& turns) { return R"({"conversations":[)" + turns + "]}\n"; }
std::string t(const char* from, const char* value) {
  return fmt::format(R"({{"from":"{}","value":"{}"}})", from, value);
}

TEST(ReadPolicies, UnknownRolesAreDroppedAndCountedOrAliased) {
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "odd.jsonl",
                         sg(t("human", "q") + "," + t("narrator", "meanwhile") + "," + t("model", "a")) +
                             sg(t("Human", "q2") + "," + t("GPT", "a2") + "," + t("narrator", "x")));
  ReadPolicies p;
  p.roles.unknown = OnProblem::Drop;
  p.roles.aliases["model"] = Role::Assistant;
  ReadReport report;
  auto cs = read_paths({path}, DatasetFormat::ShareGPT, report, p);
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0].turns.size(), 2u);
  EXPECT_EQ(cs[0].turns[1].content, "a");
  EXPECT_EQ(cs[1].turns[1].role, Role::Assistant);  // names match case-insensitively
  EXPECT_EQ(report.dropped_turns, (Counts{{"unknown role 'narrator'", 2}}));
  EXPECT_EQ(report.mapped_roles, (Counts{{"model -> assistant", 1}}));
  ASSERT_EQ(report.messages.size(), 2u);
  expect_contains(report.messages[0], {path.string() + ": record 0 (line 1): field 'conversations[1].from': unknown role 'narrator'",
                                       "(turn dropped)"});
  expect_contains(report.summary(), {"2 records read, 2 conversations kept",
                                     "dropped turns: unknown role 'narrator' x2", "mapped roles: model -> assistant x1"});
}

TEST(ReadPolicies, MergeJoinsSameRoleTurnsAndKeepsUntrainedTextUntrained) {
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "merge.jsonl",
                         R"({"conversations":[{"from":"human","value":"part one"},{"from":"human","value":"part two"},)"
                         R"({"from":"gpt","loss":true,"value":"a"},{"from":"gpt","loss":false,"value":"b"}]})"
                         "\n"
                         R"({"conversations":[{"from":"human","value":"q"},{"from":"gpt","loss":true,"value":"x"},{"from":"gpt","loss":true,"value":"y"}]})"
                         "\n");
  ReadPolicies p;
  p.alternation = Alternation::Merge;
  ReadReport report;
  auto cs = read_paths({path}, DatasetFormat::AgentInstruct, report, p);
  ASSERT_EQ(cs.size(), 2u);
  ASSERT_EQ(cs[0].turns.size(), 2u);
  EXPECT_EQ(cs[0].turns[0].content, "part one\n\npart two");
  EXPECT_EQ(cs[0].turns[1].content, "a\n\nb");
  EXPECT_EQ(cs[0].turns[1].loss, false);
  EXPECT_EQ(cs[1].turns[1].loss, true);
  EXPECT_EQ(report.merged_turns, 3);
  expect_contains(report.summary(), {"merged turns: 3"});
}

TEST(ReadPolicies, RecordsMergeCannotFixAreDroppedAndCounted) {
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "tb.jsonl",
                         R"({"conversations":[{"from":"system","value":"s"},{"from":"user","value":"q"},{"from":"assistant","value":"a"}]})"
                         "\n"
                         R"({"conversations":[{"from":"user","value":"q"},{"from":"function","value":"r"},{"from":"assistant","value":"a"}]})"
                         "\n");
  for (auto policy : {Alternation::Merge, Alternation::Drop}) {
    ReadPolicies p;
    p.alternation = policy;
    ReadReport report;
    auto cs = read_paths({path}, DatasetFormat::ToolBench, report, p);
    ASSERT_EQ(cs.size(), 1u);
    EXPECT_EQ(report.dropped_records, (Counts{{"non_alternating", 1}}));
    ASSERT_EQ(report.messages.size(), 1u);
    expect_contains(report.messages[0], {"record 1 (line 2): field 'conversations[1].from': tool turn follows a user turn",
                                         "(record dropped)"});
  }
}

TEST(ReadPolicies, LeadingAssistantKeptIsAnAlternationError) {
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "greet.jsonl", sg(t("gpt", "hello") + "," + t("human", "q") + "," + t("gpt", "a")));
  ReadPolicies p;
  p.drop_leading_assistant = false;
  expect_contains(testing::error_of(path, DatasetFormat::ShareGPT, p),
                  {"record 0 (line 1): field 'conversations[0].from': the first turn after system turns is assistant"});
}

TEST(ReadPolicies, BadRecordsDroppedByReasonWithoutTheirRepairs) {
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "mixed.jsonl",
                         sg(t("human", "q") + "," + t("gpt", "a")) +                     // kept
                             sg(t("human", "q") + "," + t("chatgpt", "")) +              // empty content
                             "{\"conversations\": [\n" +                                 // malformed
                             sg(t("human", "caf\xE9") + "," + t("gpt", "a")) +           // Latin-1 byte
                             sg(t("human", "q")) +                                       // no assistant
                             R"({"conversations":[]})" "\n" +                            // empty
                             sg(t("gpt", "hi") + "," + t("human", "q") + "," + t("gpt", "a")));  // kept, repaired
  ReadPolicies p;
  p.bad_record = OnProblem::Drop;
  ReadReport report;
  auto cs = read_paths({path}, DatasetFormat::ShareGPT, report, p);
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[1].record, 6);
  EXPECT_EQ(report.records, 7);
  EXPECT_EQ(report.kept, 2);
  EXPECT_EQ(report.dropped_records, (Counts{{"empty_content", 1}, {"malformed_json", 1}, {"invalid_utf8", 1},
                                            {"no_assistant_turn", 1}, {"empty_conversation", 1}}));
  EXPECT_TRUE(report.mapped_roles.empty()) << "the chatgpt turn's record was dropped";
  EXPECT_EQ(report.dropped_turns, (Counts{{"leading assistant turn", 1}}));
  ASSERT_EQ(report.messages.size(), 5u);
  expect_contains(report.messages[2], {"record 3 (line 4): field 'conversations[0].value': invalid UTF-8"});
  expect_contains(report.summary(), {"7 records read, 2 conversations kept", "invalid_utf8 x1",
                                     "file " + path.string() + " (sharegpt)", "first problems:"});
}

TEST(ReadPolicies, AFileWhoseRecordsAreAllDroppedIsAnError) {
  auto dir = testing::scratch_dir();
  auto path = write_file(dir, "wrong.jsonl", R"({"turns":[]})" "\n" R"({"turns":[]})" "\n");
  ReadPolicies p;
  p.bad_record = OnProblem::Drop;
  expect_contains(testing::error_of(path, DatasetFormat::ShareGPT, p),
                  {"wrong.jsonl: all 2 records were dropped; the first:", "field 'conversations': missing"});
}

TEST(ReadPolicies, FoldersReadInNameOrderAndReportsAccumulate) {
  auto dir = testing::scratch_dir();
  write_file(dir, "b.jsonl", sg(t("human", "from b") + "," + t("gpt", "a")));
  write_file(dir, "a.json", "[" + sg(t("human", "from a") + "," + t("gpt", "a")) + "]");
  write_file(dir, "notes.txt", "ignored");
  ReadReport report;
  auto cs = read_paths({dir}, DatasetFormat::Auto, report);
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0].turns[0].content, "from a");
  EXPECT_EQ(cs[0].id, "a#0");
  EXPECT_EQ(cs[1].turns[0].content, "from b");
  read_paths({dir / "b.jsonl"}, DatasetFormat::ShareGPT, report);
  EXPECT_EQ(report.records, 3);
  EXPECT_EQ(report.kept, 3);
  EXPECT_EQ(report.files.size(), 3u);
}

}  // namespace
}  // namespace agenttune
