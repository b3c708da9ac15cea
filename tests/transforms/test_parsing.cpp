// ReAct step parsing per style, and the Python-repr tool lists of ToolBench system prompts.
#include <gtest/gtest.h>

#include "agenttune/transforms/react.h"
#include "agenttune/transforms/tool_list.h"
#include "transform_test_util.h"

namespace agenttune {
namespace {

ReactStep parsed(std::string_view text) {
  ReactParse p = parse_react(text);
  EXPECT_EQ(p.match, ReactMatch::Parsed) << text;
  return p.step;
}

void expect_call(const ReactStep& s, std::string thought, std::string action, std::string args,
                 bool tool_call) {
  EXPECT_EQ(s.kind, StepKind::Call);
  EXPECT_EQ(s.thought, thought);
  EXPECT_EQ(s.action, action);
  EXPECT_EQ(s.arguments, args);
  EXPECT_EQ(s.tool_call, tool_call);
}

void expect_answer(const ReactStep& s, std::string thought, std::string answer) {
  EXPECT_EQ(s.kind, StepKind::Answer);
  EXPECT_EQ(s.thought, thought);
  EXPECT_EQ(s.answer, answer);
}

TEST(ReactParse, ToolBenchCallAndFinish) {
  expect_call(parsed("\nThought: need weather\nAction: now_for_weather\nAction Input: {\n  "
                     "\"city\": \"Oslo\"\n}"),
              "need weather", "now_for_weather", "{\n  \"city\": \"Oslo\"\n}", true);
  expect_answer(parsed("\nThought: \nAction: Finish\nAction Input: {\"return_type\": "
                       "\"give_answer\", \"final_answer\": \"Yes, it rains.\"}"),
                "", "Yes, it rains.");
  // Giving up is a call of Finish, not an answer.
  expect_call(parsed("Thought: stuck\nAction: Finish\nAction Input: {\"return_type\": "
                     "\"give_up_and_restart\"}"),
              "stuck", "Finish", "{\"return_type\": \"give_up_and_restart\"}", true);
}

TEST(ReactParse, AgentInstructStyles) {
  expect_call(parsed("Think: count them.\n\nAct: bash\n\n```bash\nls | wc -l\n```"), "count them.",
              "bash", "```bash\nls | wc -l\n```", false);
  expect_answer(parsed("Think: it is 3.\n\nAct: answer(3)"), "it is 3.", "3");
  expect_call(parsed("Think: done.\n\nAct: finish"), "done.", "finish", "", false);
  expect_call(parsed("Group by city.\nAction: Operation\n```sql\nSELECT 1;\n```"), "Group by city.",
              "Operation", "```sql\nSELECT 1;\n```", false);
  expect_answer(parsed("Got it.\nAction: Answer\nFinal Answer: [\"Lisbon\", \"Porto\"]"), "Got it.",
                "[\"Lisbon\", \"Porto\"]");
  expect_call(parsed("Thought: relations first.\nAction: get_relations(Barack Obama)"),
              "relations first.", "get_relations", "Barack Obama", false);
  expect_answer(parsed("Thought: #3 is it.\nFinal Answer: #3"), "#3 is it.", "#3");
  expect_call(parsed("THOUGHT: the fridge.\nACTION: go to fridge 1"), "the fridge.",
              "go to fridge 1", "", false);
  expect_call(parsed("Thought: search.\nAction: search[steel bottle 750 ml]"), "search.", "search",
              "steel bottle 750 ml", false);
  expect_call(parsed("Thought: buy.\nAction: click[Buy Now]"), "buy.", "click", "Buy Now", false);
}

TEST(ReactParse, PlainAndUnparseable) {
  EXPECT_EQ(parse_react("Ok.").match, ReactMatch::NotReact);
  EXPECT_EQ(parse_react("").match, ReactMatch::NotReact);
  EXPECT_EQ(parse_react("Thought: only thinking").match, ReactMatch::Unparseable);
  EXPECT_EQ(parse_react("Thought: a\nAction: x\nAction: y").match, ReactMatch::Unparseable);
  EXPECT_EQ(parse_react("Thought: a\nAction: search[x]\nObservation: made up").match,
            ReactMatch::Unparseable);
  EXPECT_EQ(parse_react("Thought: a\nAction: \nAction Input: {}").match, ReactMatch::Unparseable);
  EXPECT_EQ(parse_react("Action: Answer\nno final answer line").match, ReactMatch::Unparseable);
  EXPECT_EQ(parse_react("Action Input: {\"a\": 1}").match, ReactMatch::Unparseable);
}

TEST(PythonLiteral, ReprValues) {
  size_t used = 0;
  auto v = parse_python_literal(
      " {'a': 'it\\'s', \"b\": \"don't\", 'c': [1, -2.5, True, None, ('x',)], 'd': '\\xe9\\u00e9\\n'"
      ", 3: False} tail",
      &used);
  ASSERT_TRUE(v);
  EXPECT_EQ((*v)["a"], "it's");
  EXPECT_EQ((*v)["b"], "don't");
  EXPECT_EQ((*v)["c"], nlohmann::json::parse(R"([1, -2.5, true, null, ["x"]])"));
  EXPECT_EQ((*v)["d"], "\xC3\xA9\xC3\xA9\n");
  EXPECT_EQ((*v)["3"], false);
  EXPECT_EQ(used, std::string_view(" {'a': 'it\\'s', \"b\": \"don't\", 'c': [1, -2.5, True, None, "
                                   "('x',)], 'd': '\\xe9\\u00e9\\n', 3: False}").size());
  EXPECT_FALSE(parse_python_literal("{'a': 'unterminated}"));
  EXPECT_FALSE(parse_python_literal("[1, 2"));
  EXPECT_FALSE(parse_python_literal("{'a' 1}"));
}

TEST(ToolList, ParsesToolBenchPrompt) {
  ToolList l = parse_toolbench_tools(testing::kToolBenchSystem);
  ASSERT_EQ(l.status, ToolListStatus::Parsed);
  ASSERT_EQ(l.tools.size(), 3u);
  EXPECT_EQ(l.tools[0].name, "current_for_weatherly");
  EXPECT_EQ(l.tools[0].description,
            "This is the subfunction for tool \"weatherly\": current conditions for a city.");
  EXPECT_EQ(l.tools[2].name, "Finish");
  EXPECT_EQ(parse_toolbench_tools("You are a helpful assistant.").status, ToolListStatus::Absent);
}

TEST(ToolList, RecoversEntriesOfABrokenList) {
  // Cut off mid-entry (as a truncated prompt would be); the nested {'name': ...} of the first
  // tool's parameters must not be taken for a tool.
  ToolList l = parse_toolbench_tools(
      "Specifically, you have access to the following APIs: [{'name': 'lookup', 'description': "
      "'Find flights.', 'parameters': [{'name': 'origin', 'type': 'STRING'}]}, {'name': 'book', "
      "'description': 'Book it.'}, {'name': 'cancel', 'description': 'Cancel a boo");
  EXPECT_EQ(l.status, ToolListStatus::Partial);
  ASSERT_EQ(l.tools.size(), 2u);
  EXPECT_EQ(l.tools[0].name, "lookup");
  EXPECT_EQ(l.tools[1].name, "book");
  EXPECT_EQ(parse_toolbench_tools("you have access to the following APIs: [{'nam").status,
            ToolListStatus::Failed);
  EXPECT_EQ(render_tool_list(l.tools, "Tools:"), "Tools:\n- lookup: Find flights.\n- book: Book it.");
}

}  // namespace
}  // namespace agenttune
