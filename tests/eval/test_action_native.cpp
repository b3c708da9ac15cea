// Native tool calls (structured tools offered): replies read as vLLM's hermes (Qwen) and
// llama3_json (Llama-3.x) parsers read them; valid, invalid and near-miss fixtures.
#include "test_action_util.h"

namespace agenttune {
namespace {

using eval::hallucinates;
using eval::score_action;
using eval::scored_text;
using eval::wrongly_refuses;
using testing::Case;
using testing::expect_cases;
using testing::expect_score;
using testing::history;
using testing::kUser;

Conversation offered() {
  Conversation h = history({{kUser, "Weather in Oslo?"}});
  h.tools.push_back(ToolSpec{
      "get_weather",
      R"({"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":)"
      R"({"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}},"required":["city"]}}})"});
  return h;
}

std::string gold_call() {
  Turn t{Role::Assistant, "I will check.", std::nullopt, {}};
  t.tool_calls.push_back(ToolCall{"get_weather", R"({"city":"Oslo","unit":"c"})", ""});
  return scored_text(t);
}

const testing::Expect kMatch{.format_valid = true, .tool_valid = true, .args_valid = true, .action_match = true,
                             .calls_tool = true};
const testing::Expect kOtherCall{.format_valid = true, .tool_valid = true, .args_valid = true, .calls_tool = true};

TEST(ActionNative, GoldTextIsAHermesBlock) {
  EXPECT_EQ(gold_call(), "I will check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                         "{\"city\":\"Oslo\",\"unit\":\"c\"}}\n</tool_call>");
  EXPECT_EQ(scored_text(Turn{Role::Assistant, "plain", std::nullopt, {}}), "plain");
}

TEST(ActionNative, HermesReplies) {
  const auto h = offered();
  const std::string block = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"c\", \"city\": \"Oslo\"}}\n</tool_call>";
  auto s = score_action(AgentTask::ToolBench, h, block, gold_call());
  EXPECT_EQ(s.syntax, "native");
  EXPECT_EQ(s.gold_action, "get_weather {\"city\":\"Oslo\",\"unit\":\"c\"}");
  expect_cases(AgentTask::ToolBench, h, gold_call(),
               {{block, kMatch, "exact call, other key order"},
                {"Let me look.\n" + block, kMatch, "content before the block"},
                {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}", kMatch,
                 "unclosed block runs to the end"},
                {"<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bergen\", \"unit\": \"c\"}}</tool_call>",
                 kOtherCall, "near miss: other value"},
                {"<tool_call>{\"name\": \"get_wether\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>",
                 {.format_valid = true, .tool_valid = false, .args_valid = true, .calls_tool = true}, "unknown tool"},
                {"<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"k\", \"city\": \"Oslo\"}}</tool_call>",
                 {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "enum"},
                {"<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Oslo\"}}</tool_call>",
                 {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "missing required"},
                {"<tool_call>\n{name: get_weather}\n</tool_call>", {.calls_tool = true}, "not JSON"},
                {"<tool_call>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}</tool_call>",
                 {.calls_tool = true}, "hermes needs arguments, not parameters"},
                {"<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}</tool_call>"
                 "<tool_call>{broken</tool_call>",
                 {.calls_tool = true}, "one broken block fails the reply"}});
  auto unknown = score_action(AgentTask::ToolBench, h, "<tool_call>{\"name\": \"x\", \"arguments\": {}}</tool_call>", gold_call());
  EXPECT_TRUE(hallucinates(unknown, false));
}

TEST(ActionNative, Llama3JsonReplies) {
  const auto h = offered();
  expect_cases(AgentTask::ToolBench, h, gold_call(),
               {{"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"unit\": \"c\"}}", kMatch,
                 "Llama-3.1's template form"},
                {"<|python_tag|>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}", kMatch,
                 "python tag, arguments"},
                {"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"unit\": \"c\"}}; "
                 "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}",
                 kOtherCall, "two calls joined by ;"},
                {"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"opt\": {\"a\": {\"b\": 1}}}}",
                 {.calls_tool = true}, "nested past vLLM's regex"},
                {"{\"function\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", {.calls_tool = true},
                 "no name"},
                {"It is 3 degrees.", {.format_valid = true, .refuses = true}, "plain answer"},
                {"Use {city} as the key.", {.format_valid = true, .refuses = true}, "braces in prose are no call"}});
  auto plain = score_action(AgentTask::ToolBench, h, "It is 3 degrees.", gold_call());
  EXPECT_TRUE(wrongly_refuses(plain, false));
}

TEST(ActionNative, PlainGoldAnswerMatchesByText) {
  expect_cases(AgentTask::ToolBench, offered(), "It is 3  degrees.",
               {{"It is 3 degrees.", {.format_valid = true, .action_match = true, .refuses = true}, "same answer"},
                {"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
                 {.format_valid = true, .tool_valid = true, .args_valid = true, .calls_tool = true}, "calls instead"}});
}

}  // namespace
}  // namespace agenttune
