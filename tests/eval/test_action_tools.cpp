// The function-call scorers: ToolBench's Thought/Action/Action Input, Agent-FLAN's ReAct, chat
// form and JSON calls, plain chat, and the hallucination rule on negatives (docs/eval.md).
#include "test_action_util.h"

namespace agenttune {
namespace {

using eval::hallucinates;
using eval::score_action;
using eval::wrongly_refuses;
using testing::Expect;
using testing::expect_score;
using testing::history;
using testing::kAsst;
using testing::kSys;
using testing::kTool;
using testing::kUser;

// --- ToolBench --------------------------------------------------------------------------------
const std::string kToolBenchSystem =
    "You are AutoGPT and can call tools (functions).\nSpecifically, you have access to the following APIs: "
    "[{'name': 'current_for_weatherly', 'description': 'current conditions for a city.', 'parameters': {'type': "
    "'object', 'properties': {'city': {'type': 'string', 'description': 'City name'}}, 'required': ['city'], "
    "'optional': []}}, {'name': 'convert_for_unitsmith', 'description': 'converts a value.', 'parameters': "
    "{'type': 'object', 'properties': {'value': {'type': 'number'}, 'from': {'type': 'string'}, 'to': {'type': "
    "'string'}}, 'required': ['value', 'from', 'to'], 'optional': []}}, {'name': 'Finish', 'description': 'Call "
    "this last.', 'parameters': {'type': 'object', 'properties': {'return_type': {'type': 'string', 'enum': "
    "['give_answer', 'give_up_and_restart']}, 'final_answer': {'type': 'string'}}, 'required': ['return_type']}}]";
const Conversation kToolBench =
    history({{kSys, kToolBenchSystem}, {kUser, "\nWhat is the temperature in Reykjavik, in Fahrenheit?\nBegin!\n"}});
const std::string kCityCall =
    "\nThought: I need the current conditions.\nAction: current_for_weatherly\nAction Input: {\n  \"city\": \"Reykjavik\"\n}";

std::string call(const std::string& name, const std::string& input) {
  return "Thought: next step.\nAction: " + name + "\nAction Input: " + input;
}

TEST(ActionToolBench, CallMatchesByNameAndJsonValue) {
  auto s = score_action(AgentTask::ToolBench, kToolBench, call("current_for_weatherly", "{\"city\":\"Reykjavik\"}"), kCityCall);
  expect_score(s, {.format_valid = true, .tool_valid = true, .args_valid = true, .action_match = true, .calls_tool = true},
               "same call");
  EXPECT_EQ(s.gold_action, "current_for_weatherly {\"city\":\"Reykjavik\"}");
  EXPECT_EQ(s.syntax, "toolbench");
  expect_score(score_action(AgentTask::ToolBench, kToolBench,
                            call("convert_for_unitsmith", "{\"to\": \"F\", \"value\": 4, \"from\": \"C\"}"),
                            call("convert_for_unitsmith", "{\n  \"value\": 4.0,\n  \"from\": \"C\",\n  \"to\": \"F\"\n}")),
               {.format_valid = true, .tool_valid = true, .args_valid = true, .action_match = true, .calls_tool = true},
               "key order, 4 = 4.0");
  expect_score(score_action(AgentTask::ToolBench, kToolBench, call("current_for_weatherly", "{\"city\": \"reykjavik\"}"), kCityCall),
               {.format_valid = true, .tool_valid = true, .args_valid = true, .calls_tool = true}, "value case");
}

TEST(ActionToolBench, ArgumentRules) {
  auto missing = score_action(AgentTask::ToolBench, kToolBench, call("convert_for_unitsmith", "{\"value\": 4, \"from\": \"C\"}"), kCityCall);
  expect_score(missing, {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "missing required");
  EXPECT_NE(missing.why.find("required argument 'to'"), std::string::npos) << missing.why;
  expect_score(score_action(AgentTask::ToolBench, kToolBench, call("current_for_weatherly", "{\"city\": \"Oslo\", \"units\": \"F\"}"), kCityCall),
               {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "unknown key");
  expect_score(score_action(AgentTask::ToolBench, kToolBench, call("current_for_weatherly", "{\"city\": 5}"), kCityCall),
               {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "wrong type");
  expect_score(score_action(AgentTask::ToolBench, kToolBench, call("current_for_weatherly", "city=Reykjavik"), kCityCall),
               {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "not JSON");
  expect_score(score_action(AgentTask::ToolBench, kToolBench, call("convert_for_unitsmith", ""), kCityCall),
               {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "empty = {} lacks keys");
}

TEST(ActionToolBench, UnknownToolMissingInputAndPlainText) {
  auto unknown = score_action(AgentTask::ToolBench, kToolBench, call("forecast_for_weatherly", "{\"city\": \"Reykjavik\"}"), kCityCall);
  expect_score(unknown, {.format_valid = true, .tool_valid = false, .args_valid = true, .calls_tool = true}, "not offered");
  EXPECT_TRUE(hallucinates(unknown, /*negative=*/false));
  expect_score(score_action(AgentTask::ToolBench, kToolBench, "Thought: x\nAction: current_for_weatherly", kCityCall),
               {.tool_valid = true, .calls_tool = true}, "no Action Input");
  auto plain = score_action(AgentTask::ToolBench, kToolBench, "It is about 39 F in Reykjavik.", kCityCall);
  expect_score(plain, {.refuses = true}, "plain text");
  EXPECT_TRUE(wrongly_refuses(plain, /*negative=*/false));
  EXPECT_FALSE(hallucinates(plain, /*negative=*/false));
}

TEST(ActionToolBench, FinishRules) {
  const std::string give_up = call("Finish", "{\n  \"return_type\": \"give_up_and_restart\"\n}");
  auto s = score_action(AgentTask::ToolBench, kToolBench, call("Finish", "{\"return_type\": \"give_up_and_restart\"}"), give_up);
  expect_score(s, {.format_valid = true, .tool_valid = true, .args_valid = true, .action_match = true, .refuses = true}, "give up");
  EXPECT_FALSE(s.gold_calls_tool);
  expect_score(score_action(AgentTask::ToolBench, kToolBench, call("Finish", "{\"return_type\": \"give_answer\"}"), give_up),
               {.format_valid = true, .tool_valid = true, .args_valid = false, .refuses = true}, "give_answer without answer");
  expect_score(score_action(AgentTask::ToolBench, kToolBench, call("Finish", "{\"return_type\": \"done\"}"), give_up),
               {.format_valid = true, .tool_valid = true, .args_valid = false, .refuses = true}, "bad return_type");
}

// --- Agent-FLAN -------------------------------------------------------------------------------
const std::string kLagentSystem =
    "You are an assistant that may call external tools.\n[{'name': 'lookup_flight', 'description': 'Find "
    "flights.', 'parameters': [{'name': 'origin', 'type': 'STRING'}, {'name': 'destination', 'type': 'STRING'}, "
    "{'name': 'date', 'type': 'STRING'}], 'required': ['origin', 'destination']}]\nTo use a tool, please use the "
    "following format:\n```\nThought: ...\nAction: the tool name, should be one of [['lookup_flight']]\nAction "
    "Input: the input to the action\n```\nIf you do not need to use tools, reply with\n```\nThought: ...\nFinal "
    "Answer: final answer\n```\nBegin!";

TEST(ActionAgentFlan, ReactToolCallsWithLagentToolList) {
  const Conversation h = history({{kSys, kLagentSystem}, {kUser, "Is there a flight from OSL to LIS on 2024-05-03?"}});
  const std::string gold = call("lookup_flight", "{\"origin\": \"OSL\", \"destination\": \"LIS\", \"date\": \"2024-05-03\"}");
  expect_score(score_action(AgentTask::AgentFlan, h, call("lookup_flight", "{\"date\": \"2024-05-03\", \"origin\": \"OSL\", \"destination\": \"LIS\"}"), gold),
               {.format_valid = true, .tool_valid = true, .args_valid = true, .action_match = true, .calls_tool = true}, "same");
  expect_score(score_action(AgentTask::AgentFlan, h, call("lookup_flight", "{\"origin\": \"OSL\", \"time\": \"10:00\"}"), gold),
               {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "missing and unknown key");
  expect_score(score_action(AgentTask::AgentFlan, h, call("book_flight", "{}"), gold),
               {.format_valid = true, .tool_valid = false, .args_valid = true, .calls_tool = true}, "not offered");
  expect_score(score_action(AgentTask::AgentFlan, h, "Thought: done.\nFinal Answer: Yes,  DY1302.", "Thought: one.\nFinal Answer: Yes, DY1302."),
               {.format_valid = true, .action_match = true, .refuses = true}, "final answer");
}

TEST(ActionAgentFlan, ReactTurnsOfAgentInstructTasksUseTheirParser) {
  const Conversation h = history(
      {{kSys, "You are a helpful assistant."},
       {kUser, "You are an assistant operating a Linux shell. Actions: \"Act: bash\" with a ```bash block; \"Act: "
               "answer(YOUR_ANSWER)\"; \"Act: finish\".\nNow, my problem is:\n\nHow many files are in /srv?"}});
  const std::string gold = "Think: count.\n\nAct: bash\n\n```bash\nls /srv | wc -l\n```";
  expect_score(score_action(AgentTask::AgentFlan, h, "Think: list.\nAct: bash\n```bash\nls  /srv | wc -l;\n```", gold),
               {.format_valid = true, .action_match = true, .calls_tool = true}, "os form");
  expect_score(score_action(AgentTask::AgentFlan, h, call("bash", "{\"cmd\": \"ls /srv | wc -l\"}"), gold),
               {.refuses = true}, "toolbench form where os is asked");
}

TEST(ActionAgentFlan, ChatFormTurns) {
  const Conversation h = history(
      {{kSys, "You are a helpful assistant."},
       {kUser, "You answer questions by querying a MySQL database. Reply \"Action: Operation\" with a ```sql block, "
               "or \"Action: Answer\".\nWhich two cities have the most customers?"},
       {kAsst, "I should count customers per city."},
       {kUser, "Which action do you take next?"}});
  auto name = score_action(AgentTask::AgentFlan, h, "Operation", "Operation");
  expect_score(name, {.format_valid = true, .action_match = true, .refuses = true}, "action name");
  EXPECT_EQ(name.syntax, "chat");  // the DB protocol, but the gold turn is not a DB action
  expect_score(score_action(AgentTask::AgentFlan, h, "Answer", "Operation"), {.format_valid = true, .refuses = true}, "other action");
  expect_score(score_action(AgentTask::AgentFlan, h, "Action: Operation", "Operation"), {.calls_tool = true},
               "ReAct marker in the chat form");
  expect_score(score_action(AgentTask::AgentFlan, h, "```sql\nselect city, count(*) as n from customers limit 2\n```",
                            "```sql\nSELECT city, COUNT(*) AS n FROM customers LIMIT 2;\n```"),
               {.format_valid = true, .action_match = true, .refuses = true}, "sql block");
  expect_score(score_action(AgentTask::AgentFlan, h, "I   should count customers\nper city.", "I should count customers per city."),
               {.format_valid = true, .action_match = true, .refuses = true}, "thought, whitespace");
  expect_score(score_action(AgentTask::AgentFlan, h, "", "Operation"), {}, "empty");
}

const std::string kDashTools = "You can use the following tools:\n- lookup_flight: Find flights.\n- convert: Convert units.";

TEST(ActionAgentFlan, ChatFormToolChoiceAndArguments) {
  Conversation h = history({{kSys, kLagentSystem}, {kUser, "Is there a flight from OSL to LIS?"},
                            {kAsst, "I should look up flights."}, {kUser, "Which tool will you call?"}});
  expect_score(score_action(AgentTask::AgentFlan, h, "lookup_flight", "lookup_flight"),
               {.format_valid = true, .tool_valid = true, .action_match = true, .calls_tool = true}, "tool name");
  expect_score(score_action(AgentTask::AgentFlan, h, "book_flight", "lookup_flight"),
               {.format_valid = true, .tool_valid = false, .calls_tool = true}, "other name");
  h.turns.push_back(Turn{kAsst, "lookup_flight", std::nullopt, {}});
  h.turns.push_back(Turn{kUser, "With what arguments?", std::nullopt, {}});
  const std::string gold = "{\"origin\": \"OSL\", \"destination\": \"LIS\"}";
  expect_score(score_action(AgentTask::AgentFlan, h, "{\"destination\": \"LIS\", \"origin\": \"OSL\"}", gold),
               {.format_valid = true, .args_valid = true, .action_match = true, .refuses = true}, "arguments");
  expect_score(score_action(AgentTask::AgentFlan, h, "{\"origin\": \"OSL\"}", gold),
               {.format_valid = true, .args_valid = false, .refuses = true}, "required key missing");
  expect_score(score_action(AgentTask::AgentFlan, h, "origin OSL, destination LIS", gold), {.refuses = true}, "not JSON");
}

TEST(ActionAgentFlan, JsonCallFormatFollowing) {
  const Conversation h = history({{kSys, kDashTools}, {kUser, "Flights OSL to LIS?\n\nReply with only a JSON object."}});
  const std::string gold = "{\"name\":\"lookup_flight\",\"arguments\":{\"origin\":\"OSL\",\"destination\":\"LIS\"}}";
  expect_score(score_action(AgentTask::AgentFlan, h, "{\"arguments\": {\"destination\": \"LIS\", \"origin\": \"OSL\"}, \"name\": \"lookup_flight\"}", gold),
               {.format_valid = true, .tool_valid = true, .args_valid = true, .action_match = true, .calls_tool = true}, "same call");
  EXPECT_EQ(score_action(AgentTask::AgentFlan, h, gold, gold).syntax, "json_call");
  expect_score(score_action(AgentTask::AgentFlan, h, "{\"name\": \"book\", \"arguments\": {}}", gold),
               {.format_valid = true, .tool_valid = false, .args_valid = true, .calls_tool = true}, "not offered");
  expect_score(score_action(AgentTask::AgentFlan, h, "lookup_flight", gold), {.refuses = true}, "bare name");
}

// --- negatives and hallucination --------------------------------------------------------------
TEST(ActionHallucination, NegativeWithToolsOffered) {
  const Conversation h = history({{kSys, kLagentSystem}, {kUser, "What does 'ETA' mean when travelling?"}});
  const std::string gold = "Thought: general knowledge.\nFinal Answer: ETA means estimated time of arrival.";
  auto right = score_action(AgentTask::AgentFlan, h, gold, gold);
  expect_score(right, {.format_valid = true, .action_match = true, .refuses = true}, "plain answer");
  EXPECT_FALSE(hallucinates(right, /*negative=*/true));
  auto called = score_action(AgentTask::AgentFlan, h, call("lookup_flight", "{\"origin\": \"ETA\", \"destination\": \"X\"}"), gold);
  expect_score(called, {.format_valid = true, .tool_valid = true, .args_valid = true, .calls_tool = true}, "calls anyway");
  EXPECT_TRUE(hallucinates(called, /*negative=*/true));
  EXPECT_FALSE(hallucinates(called, /*negative=*/false));  // an offered tool is fine on a positive
}

TEST(ActionHallucination, NegativesInChatForm) {
  const Conversation tools = history({{kSys, kDashTools}, {kUser, "Tell me a joke about pilots."}});
  const std::string gold = "Why did the pilot bring a ladder? To reach the high altitudes.";
  for (const char* reply : {"lookup_flight", "{\"name\": \"jokes\", \"arguments\": {}}", "Action: lookup_flight\nAction Input: {}"}) {
    auto s = score_action(AgentTask::AgentFlan, tools, reply, gold);
    EXPECT_TRUE(s.calls_tool) << reply;
    EXPECT_TRUE(hallucinates(s, /*negative=*/true)) << reply;
    EXPECT_FALSE(s.refuses) << reply;
  }
  auto plain = score_action(AgentTask::AgentFlan, tools, "A pilot walks into a bar.", gold);
  expect_score(plain, {.format_valid = true, .refuses = true}, "plain answer, other text");
  EXPECT_FALSE(hallucinates(plain, /*negative=*/true));
  const Conversation none = history({{kUser, "What is the weather on Mars?"}});
  auto s = score_action(AgentTask::AgentFlan, none, "Thought: use a tool.\nAction: mars_weather\nAction Input: {}", "I cannot check that.");
  expect_score(s, {.calls_tool = true}, "no tools offered");
  EXPECT_TRUE(hallucinates(s, /*negative=*/true));
}

// --- chat -------------------------------------------------------------------------------------
TEST(ActionChat, PlainTextRules) {
  const Conversation h = history({{kSys, "Reply in French."}, {kUser, "Say thank you."}});
  expect_score(score_action(AgentTask::Chat, h, " Merci  !\n", "Merci !"),
               {.format_valid = true, .action_match = true, .refuses = true}, "whitespace");
  expect_score(score_action(AgentTask::Chat, h, "Merci beaucoup !", "Merci !"), {.format_valid = true, .refuses = true}, "other text");
  expect_score(score_action(AgentTask::Chat, h, "Thought: French.\nFinal Answer: Merci !", "Merci !"), {.refuses = true}, "ReAct");
  expect_score(score_action(AgentTask::Chat, h, "   ", "Merci !"), {}, "blank");
}

}  // namespace
}  // namespace agenttune
