// OpenAI messages with `tools` and `tool_calls`: read structured, in the data's key order, and
// malformed tool fields refused naming the field.
#include "readers_test_util.h"

namespace agenttune {
namespace {

using testing::error_of;
using testing::expect_contains;
using testing::read_one;
using testing::write_file;

// Keys deliberately out of alphabetical order: a sorted re-dump would change the rendered ids.
const std::string kWeatherTool =
    R"({"type":"function","function":{"name":"get_weather","description":"Weather now.","parameters":)"
    R"({"type":"object","properties":{"unit":{"type":"string","enum":["c","f"]},"city":{"type":"string"}},)"
    R"("required":["city"]}}})";

std::filesystem::path scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("agenttune_openai_tools_" + name);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(OpenAITools, ToolsCallsAndResultsAreStructuredInDataOrder) {
  const std::string rec =
      R"({"tools":[)" + kWeatherTool + R"(],"messages":[{"role":"user","content":"Weather in Oslo and Rome?"},)"
      R"({"role":"assistant","content":null,"tool_calls":[)"
      R"({"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"unit\": \"c\", \"city\": \"Oslo\"}"}},)"
      R"({"id":"c2","type":"function","function":{"name":"get_weather","arguments":{"unit":"c","city":"Rome"}}}]},)"
      R"({"role":"tool","tool_call_id":"c1","content":"4 C"},)"
      R"({"role":"tool","name":"get_weather","content":"17 C"},)"
      R"({"role":"assistant","content":"Oslo 4 C, Rome 17 C."}]})";
  auto convs = read_one(write_file(scratch("ok"), "t.jsonl", rec + "\n"), DatasetFormat::OpenAI);
  ASSERT_EQ(convs.size(), 1u);
  const Conversation& c = convs[0];
  ASSERT_EQ(c.tools.size(), 1u);
  EXPECT_EQ(c.tools[0].name, "get_weather");
  EXPECT_EQ(c.tools[0].json, kWeatherTool);
  ASSERT_EQ(c.turns.size(), 5u);
  const Turn& call = c.turns[1];
  EXPECT_EQ(call.role, Role::Assistant);
  EXPECT_EQ(call.content, "");
  ASSERT_EQ(call.tool_calls.size(), 2u);
  EXPECT_EQ(call.tool_calls[0].name, "get_weather");
  EXPECT_EQ(call.tool_calls[0].arguments, R"({"unit":"c","city":"Oslo"})");  // from the API's JSON text
  EXPECT_EQ(call.tool_calls[0].id, "c1");
  EXPECT_EQ(call.tool_calls[1].arguments, R"({"unit":"c","city":"Rome"})");  // given as an object
  EXPECT_EQ(c.turns[2].role, Role::Tool);
  EXPECT_EQ(c.turns[2].name, "get_weather");  // through tool_call_id
  EXPECT_EQ(c.turns[3].role, Role::Tool);     // parallel results stay apart
  EXPECT_EQ(c.turns[3].name, "get_weather");
  EXPECT_TRUE(c.turns[4].tool_calls.empty());
}

TEST(OpenAITools, MergeKeepsParallelResultsApart) {
  const std::string rec =
      R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"","tool_calls":[)"
      R"({"function":{"name":"a","arguments":"{}"}},{"function":{"name":"b","arguments":"{}"}}]},)"
      R"({"role":"tool","name":"a","content":"1"},{"role":"tool","name":"b","content":"2"},)"
      R"({"role":"assistant","content":"done"}]})";
  ReadPolicies merge;
  merge.alternation = Alternation::Merge;
  auto convs = read_one(write_file(scratch("merge"), "t.jsonl", rec + "\n"), DatasetFormat::OpenAI, merge);
  ASSERT_EQ(convs.size(), 1u);
  ASSERT_EQ(convs[0].turns.size(), 5u);
  EXPECT_EQ(convs[0].turns[2].name, "a");
  EXPECT_EQ(convs[0].turns[3].name, "b");
  EXPECT_EQ(convs[0].turns[1].tool_calls.size(), 2u);
}

TEST(OpenAITools, MalformedToolFieldsNameTheField) {
  const std::string user = R"({"role":"user","content":"q"})";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {R"({"tools":[{"type":"function","function":{"description":"no name"}}],"messages":[)" + user +
           R"(,{"role":"assistant","content":"a"}]})",
       {"field 'tools[0]'", "\"name\""}},
      {R"({"messages":[)" + user + R"(,{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f",)"
           R"("arguments":"[1, 2]"}}]}]})",
       {"field 'messages[1].tool_calls[0].function.arguments'", "expected a JSON object"}},
      {R"({"messages":[)" + user + R"(,{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f"}}]},)"
           R"({"role":"tool","tool_call_id":"nope","content":"x"},{"role":"assistant","content":"a"}]})",
       {"field 'messages[2].tool_call_id'", "no earlier tool call has id \"nope\""}},
      {R"({"messages":[{"role":"user","content":"q","tool_calls":[{"function":{"name":"f"}}]},)"
           R"({"role":"assistant","content":"a"}]})",
       {"field 'messages[0].tool_calls'", "only assistant turns make calls"}},
      {R"({"messages":[)" + user + R"(,{"role":"assistant","content":null,"tool_calls":[]}]})",
       {"field 'messages[1].content'", "tool_calls is empty"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    auto path = write_file(scratch("bad"), "bad" + std::to_string(i) + ".jsonl", cases[i].first + "\n");
    const std::string err = error_of(path, DatasetFormat::OpenAI);
    ASSERT_FALSE(err.empty()) << cases[i].first;
    for (const auto& part : cases[i].second) expect_contains(err, {part});
  }
}

}  // namespace
}  // namespace agenttune
