// The bundled samples in data/samples/ read into the expected Conversations, with and without
// auto-detection, as JSON arrays and as JSON Lines.
#include <nlohmann/json.hpp>

#include <fstream>

#include "readers_test_util.h"

namespace agenttune {
namespace {

using testing::read_one;
using testing::sample;
using Losses = std::vector<std::optional<bool>>;
using Roles = std::vector<Role>;

Roles roles_of(const Conversation& c) {
  Roles r;
  for (const auto& t : c.turns) r.push_back(t.role);
  return r;
}
Losses losses_of(const Conversation& c) {
  Losses l;
  for (const auto& t : c.turns) l.push_back(t.loss);
  return l;
}

void expect_same(const std::vector<Conversation>& a, const std::vector<Conversation>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(roles_of(a[i]), roles_of(b[i])) << a[i].id;
    EXPECT_EQ(losses_of(a[i]), losses_of(b[i])) << a[i].id;
    ASSERT_EQ(a[i].turns.size(), b[i].turns.size());
    for (size_t t = 0; t < a[i].turns.size(); ++t) EXPECT_EQ(a[i].turns[t].content, b[i].turns[t].content);
  }
}

constexpr auto U = Role::User, A = Role::Assistant, S = Role::System, T = Role::Tool;
constexpr std::optional<bool> N = std::nullopt;

TEST(ReadSamples, AgentInstructKeepsOkTurnUntrained) {
  auto cs = read_one(sample("agentinstruct.jsonl"), DatasetFormat::AgentInstruct);
  ASSERT_EQ(cs.size(), 5u);
  const auto& os = cs[0];
  EXPECT_EQ(os.id, "os_12");
  EXPECT_EQ(os.source, "test");
  EXPECT_EQ(os.record, 0);
  EXPECT_EQ(roles_of(os), (Roles{U, A, U, A, U, A}));
  EXPECT_EQ(losses_of(os), (Losses{N, false, N, true, N, true}));
  EXPECT_EQ(os.turns[1].content, "Ok.");
  EXPECT_FALSE(trains(os.turns[1]));
  EXPECT_TRUE(os.turns[3].content.starts_with("Think: find can filter"));
  EXPECT_NE(os.turns[4].content.find("\x1b[?2004h"), std::string::npos);  // escapes decoded
  // The embedded one-shot example's reply is scaffolding too.
  EXPECT_EQ(cs[4].id, "alfworld_54");
  EXPECT_EQ(losses_of(cs[4]), (Losses{N, false, N, false, N, true, N, true}));
}

TEST(ReadSamples, ShareGptMapsOddRolesAndDropsLeadingGreeting) {
  ReadReport report;
  auto cs = testing::read_paths({sample("sharegpt.json")}, DatasetFormat::ShareGPT, report);
  ASSERT_EQ(cs.size(), 5u);
  EXPECT_EQ(roles_of(cs[1]), (Roles{U, A, U, A}));
  EXPECT_EQ(cs[1].turns[0].content, "Explain what a hash map is in one sentence.");
  EXPECT_EQ(roles_of(cs[2]), (Roles{S, U, A}));
  EXPECT_EQ(roles_of(cs[3]), (Roles{U, A}));
  EXPECT_EQ(cs[3].turns[1].content, "German: \u201eGuten Morgen\u201c. French: \u00abBonjour\u00bb.");
  EXPECT_EQ(roles_of(cs[4]), (Roles{U, A, U, A}));
  for (const auto& c : cs) EXPECT_EQ(losses_of(c), Losses(c.turns.size(), N)) << c.id;
  EXPECT_EQ(report.dropped_turns, (std::map<std::string, int64_t>{{"leading assistant turn", 1}}));
  EXPECT_EQ(report.mapped_roles,
            (std::map<std::string, int64_t>{{"bing -> assistant", 1}, {"chatgpt -> assistant", 1}}));
  EXPECT_TRUE(report.dropped_records.empty());
}

TEST(ReadSamples, ToolBenchFunctionIsToolAndOnlyLastStepTrains) {
  auto cs = read_one(sample("toolbench_sft.json"), DatasetFormat::ToolBench);
  ASSERT_EQ(cs.size(), 4u);
  EXPECT_EQ(cs[0].id, "Step 1: What is the temperature in Reykjavik right now, in Fahrenheit?");
  EXPECT_EQ(roles_of(cs[0]), (Roles{S, U, A}));
  EXPECT_EQ(roles_of(cs[2]), (Roles{S, U, A, T, A, T, A}));
  EXPECT_EQ(losses_of(cs[2]), (Losses{N, N, false, N, false, N, true}));
  EXPECT_TRUE(cs[2].turns[6].content.starts_with("\nThought: I have the answer.\nAction: Finish\nAction Input: {"));
  EXPECT_TRUE(cs[2].turns[0].content.find("Specifically, you have access to the following APIs: ") != std::string::npos);

  ReadPolicies all_steps;
  all_steps.toolbench_last_assistant_only = false;
  auto raw = read_one(sample("toolbench_sft.json"), DatasetFormat::ToolBench, all_steps);
  EXPECT_EQ(losses_of(raw[2]), Losses(7, N));
}

TEST(ReadSamples, AgentFlanParsesBoolAndStringLoss) {
  auto cs = read_one(sample("agentflan.jsonl"), DatasetFormat::AgentFlan);
  ASSERT_EQ(cs.size(), 5u);
  EXPECT_EQ(cs[0].id, "react_os_12");
  EXPECT_EQ(roles_of(cs[0]), (Roles{S, U, A, U, A}));
  EXPECT_EQ(losses_of(cs[0]), (Losses{false, false, true, false, true}));
  EXPECT_EQ(roles_of(cs[1]), (Roles{S, U, A, U, A, U, A}));
  EXPECT_EQ(cs[1].turns[4].content, "Operation");
  // "true"/"false" strings as xtuner accepts them.
  EXPECT_EQ(losses_of(cs[2]), (Losses{false, false, true, false, true}));
  // No loss at all: unset, so assistant turns train and the others never do.
  EXPECT_EQ(losses_of(cs[3]), (Losses{N, N, N}));
  EXPECT_TRUE(trains(cs[3].turns[2]));
  EXPECT_EQ(roles_of(cs[4]), (Roles{U, A, U, A}));
}

TEST(ReadSamples, OpenAiMessagesWithToolRoleWeightAndLoss) {
  auto cs = read_one(sample("openai_messages.jsonl"), DatasetFormat::OpenAI);
  ASSERT_EQ(cs.size(), 4u);
  EXPECT_EQ(cs[0].id, "openai_messages#0");  // no id in the file: stem#record
  EXPECT_EQ(roles_of(cs[1]), (Roles{S, U, A, T, A}));
  EXPECT_EQ(cs[1].turns[3].content, "1267650600228229401496703205376");
  EXPECT_EQ(losses_of(cs[2]), (Losses{N, false, N, true}));
  EXPECT_EQ(losses_of(cs[3]), (Losses{N, N, true, N, false}));
  EXPECT_EQ(cs[3].turns[4].content, "\u00c0 bient\u00f4t !");
}

TEST(ReadSamples, AutoDetectPicksEachSchema) {
  const std::pair<const char*, DatasetFormat> cases[] = {
      {"agentinstruct.jsonl", DatasetFormat::AgentInstruct}, {"sharegpt.json", DatasetFormat::ShareGPT},
      {"toolbench_sft.json", DatasetFormat::ToolBench},      {"agentflan.jsonl", DatasetFormat::AgentFlan},
      {"openai_messages.jsonl", DatasetFormat::OpenAI}};
  for (const auto& [file, format] : cases) {
    ReadReport report;
    auto detected = testing::read_paths({sample(file)}, DatasetFormat::Auto, report);
    ASSERT_EQ(report.files.size(), 1u);
    EXPECT_EQ(report.files[0].second, format) << file;
    expect_same(detected, read_one(sample(file), format));
  }
}

TEST(ReadSamples, JsonArrayAndJsonLinesReadAlike) {
  auto dir = testing::scratch_dir();
  std::ifstream in(sample("agentinstruct.jsonl"));
  std::string line, array = "[\n", crlf;
  while (std::getline(in, line)) {
    array += (array.size() > 2 ? ",\n  " : "  ") + line;
    crlf += line + "\r\n\r\n";  // Windows line ends and blank lines are fine
  }
  array += "\n]\n";
  auto from_array = read_one(testing::write_file(dir, "ai.json", array), DatasetFormat::Auto);
  auto from_crlf = read_one(testing::write_file(dir, "ai_crlf.jsonl", crlf), DatasetFormat::Auto);
  auto from_lines = read_one(sample("agentinstruct.jsonl"), DatasetFormat::Auto);
  expect_same(from_array, from_lines);
  expect_same(from_crlf, from_lines);

  // And the other way round: the ShareGPT array as JSON Lines, with a BOM in front.
  std::ifstream sg_in(sample("sharegpt.json"));
  auto sg = nlohmann::json::parse(sg_in);
  std::string sg_lines = "\xEF\xBB\xBF";
  for (const auto& rec : sg) sg_lines += rec.dump() + "\n";
  expect_same(read_one(testing::write_file(dir, "sg.jsonl", sg_lines), DatasetFormat::ShareGPT),
              read_one(sample("sharegpt.json"), DatasetFormat::ShareGPT));
  // A one-line array too.
  expect_same(read_one(testing::write_file(dir, "sg_one_line.json", sg.dump()), DatasetFormat::Auto),
              read_one(sample("sharegpt.json"), DatasetFormat::ShareGPT));
}

}  // namespace
}  // namespace agenttune
