// ReAct agent data made structured (transforms/native_tool_calls.h): ToolBench and Agent-FLAN
// (lagent) tool lists, calls, results and answers; what stays text and why.
#include <gtest/gtest.h>

#include "agenttune/transforms/native_tool_calls.h"
#include "transform_test_util.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;

const std::string kQuery = "\nTemperature in Oslo?\nBegin!\n";
const std::string kCall = "\nThought: look it up\nAction: current_for_weatherly\nAction Input: {\"city\": \"Oslo\", \"at\": 1}";
const std::string kFinish =
    "\nThought: \nAction: Finish\nAction Input: {\"return_type\": \"give_answer\", \"final_answer\": \"3 degrees.\"}";

Conversation toolbench() {
  return conv("Step 2: Oslo", {sys(kToolBenchSystem), user(kQuery), asst(kCall, false), tool("{\"response\": \"3\"}"),
                               asst(kFinish, true)});
}

TransformReport convert(std::vector<Conversation>& convs, bool thought_with_call = true) {
  TransformReport report("tool_calls");
  to_native_tool_calls(convs, NativeCallOptions{thought_with_call}, report);
  return report;
}

TEST(NativeToolCalls, ToolBenchTrajectoryBecomesStructured) {
  std::vector<Conversation> convs{toolbench()};
  auto report = convert(convs);
  const Conversation& c = convs[0];
  // Finish is left out: its give_answer is the plain final reply.
  ASSERT_EQ(c.tools.size(), 2u);
  EXPECT_EQ(c.tools[0].name, "current_for_weatherly");
  EXPECT_EQ(c.tools[0].json,
            R"({"type":"function","function":{"name":"current_for_weatherly","description":"This is the subfunction )"
            R"(for tool \"weatherly\": current conditions for a city.","parameters":{"type":"object","properties":)"
            R"({"city":{"type":"string"}},"required":["city"]}}})");
  EXPECT_EQ(c.tools[1].name, "convert_for_unitsmith");
  // The protocol system prompt is gone (the template's tool prompt replaces it).
  ASSERT_EQ(c.turns.size(), 4u);
  EXPECT_EQ(c.turns[0].role, Role::User);
  EXPECT_EQ(c.turns[0].content, kQuery);
  const Turn& call = c.turns[1];
  EXPECT_EQ(call.content, "look it up");
  EXPECT_EQ(call.loss, std::optional<bool>(false));
  ASSERT_EQ(call.tool_calls.size(), 1u);
  EXPECT_EQ(call.tool_calls[0].name, "current_for_weatherly");
  EXPECT_EQ(call.tool_calls[0].arguments, R"({"city":"Oslo","at":1})");  // the data's key order
  EXPECT_EQ(c.turns[2].role, Role::Tool);
  EXPECT_EQ(c.turns[2].name, "current_for_weatherly");
  EXPECT_EQ(c.turns[2].content, "{\"response\": \"3\"}");
  EXPECT_EQ(c.turns[3].content, "3 degrees.");
  EXPECT_TRUE(c.turns[3].tool_calls.empty());
  EXPECT_EQ(c.turns[3].loss, std::optional<bool>(true));
  EXPECT_EQ(report.get("native"), 1);
  EXPECT_EQ(report.get("calls"), 1);
  EXPECT_EQ(report.get("answers"), 1);
  EXPECT_EQ(report.get("tool_results"), 1);
}

TEST(NativeToolCalls, ThoughtLeftOutWhereTheTemplatePrintsOnlyTheCall) {
  std::vector<Conversation> convs{toolbench()};
  auto report = convert(convs, /*thought_with_call=*/false);
  EXPECT_EQ(convs[0].turns[1].content, "");
  EXPECT_EQ(convs[0].turns[1].tool_calls.size(), 1u);
  EXPECT_EQ(report.get("thoughts_dropped"), 1);
}

TEST(NativeToolCalls, AgentFlanLagentListAndResponses) {
  const std::string system =
      "You are an assistant that may call external tools.\n[{'name': 'lookup_flight', 'description': 'Find "
      "flights.', 'parameters': [{'name': 'origin', 'type': 'STRING'}, {'name': 'date', 'type': 'STRING', "
      "'description': 'ISO date'}], 'required': ['origin']}]\nTo use a tool, please use the following format:\n"
      "Thought: ...\nAction: ...\nAction Input: ...\nBegin!";
  std::vector<Conversation> convs{conv(
      "toolbench_react_1",
      {sys(system), user("Flights from OSL on 2024-05-03?"),
       asst("Thought: search.\nAction: lookup_flight\nAction Input: {\"origin\": \"OSL\", \"date\": \"2024-05-03\"}"),
       user("Response: {\"flights\": 1}"), asst("Thought: There is one.\nFinal Answer: Yes, one flight.")})};
  auto report = convert(convs);
  const Conversation& c = convs[0];
  ASSERT_EQ(c.tools.size(), 1u);
  EXPECT_EQ(c.tools[0].json,
            R"({"type":"function","function":{"name":"lookup_flight","description":"Find flights.","parameters":)"
            R"({"type":"object","properties":{"origin":{"type":"string"},"date":{"type":"string","description":)"
            R"("ISO date"}},"required":["origin"]}}})");
  ASSERT_EQ(c.turns.size(), 4u);
  EXPECT_EQ(c.turns[1].tool_calls.at(0).arguments, R"({"origin":"OSL","date":"2024-05-03"})");
  EXPECT_EQ(c.turns[2].role, Role::Tool);
  EXPECT_EQ(c.turns[2].name, "lookup_flight");
  EXPECT_EQ(c.turns[2].content, "{\"flights\": 1}");
  EXPECT_EQ(c.turns[3].content, "Yes, one flight.");
  EXPECT_EQ(report.get("native"), 1);
}

TEST(NativeToolCalls, WhatDoesNotFitStaysTextWithItsReason) {
  const std::string give_up =
      "Thought: no luck\nAction: Finish\nAction Input: {\"return_type\": \"give_up_and_restart\"}";
  std::vector<Conversation> convs{
      conv("chat", {user("hi"), asst("Hello.")}),
      conv("give_up", {sys(kToolBenchSystem), user(kQuery), asst(give_up)}),
      conv("env", {sys(kToolBenchSystem), user(kQuery), asst("Thought: shop\nAction: search[bottle]")}),
      conv("args", {sys(kToolBenchSystem), user(kQuery),
                    asst("Thought: t\nAction: current_for_weatherly\nAction Input: [\"Oslo\"]")}),
      conv("orphan", {sys(kToolBenchSystem), user(kQuery), asst(kCall), tool("a"), tool("b"), asst(kFinish)}),
      conv("aligned", {sys(kToolBenchSystem), user(kQuery), asst("current_for_weatherly")}),
      conv("two_actions", {sys(kToolBenchSystem), user(kQuery), asst("Action: a\nAction: b")}),
  };
  const auto before = convs;
  auto report = convert(convs);
  for (size_t i = 0; i < convs.size(); ++i) {
    SCOPED_TRACE(convs[i].id);
    EXPECT_TRUE(convs[i].tools.empty());
    expect_turns(convs[i].turns, before[i].turns);
  }
  EXPECT_EQ(report.get("native"), 0);
  EXPECT_EQ(report.get("calls"), 0);
  EXPECT_EQ(report.get("text.no_tool_list"), 1);
  EXPECT_EQ(report.get("text.unlisted_tool"), 1);
  EXPECT_EQ(report.get("text.not_a_function_call"), 1);
  EXPECT_EQ(report.get("text.arguments_not_object"), 1);
  EXPECT_EQ(report.get("text.result_without_call"), 1);
  EXPECT_EQ(report.get("text.no_react_steps"), 1);
  EXPECT_EQ(report.get("text.unparseable_step"), 1);
  ASSERT_EQ(report.notes.size(), 6u);  // every reason but the plain chat one, naming the record
  EXPECT_NE(report.notes[0].find("give_up"), std::string::npos) << report.notes[0];
}

TEST(NativeToolCalls, StructuredRecordsAreLeftAlone) {
  Conversation c = conv("openai", {user("q"), asst("")});
  c.tools.push_back(ToolSpec{"f", R"({"type":"function","function":{"name":"f"}})"});
  c.turns[1].tool_calls.push_back(ToolCall{"f", "{}", "c1"});
  std::vector<Conversation> convs{c};
  auto report = convert(convs);
  EXPECT_EQ(report.get("structured"), 1);
  EXPECT_EQ(convs[0].tools[0].json, c.tools[0].json);
  EXPECT_EQ(convs[0].turns[1].tool_calls[0].id, "c1");
}

}  // namespace
}  // namespace agenttune
