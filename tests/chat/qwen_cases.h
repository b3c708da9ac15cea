#pragma once
// Conversations for the Qwen templates (qwen2.5, qwen3, qwen3-no-think) beyond the shared ones:
// what Qwen's format has and Llama-3.1's lacks (several calls in one turn, text before the calls,
// calls with no tools offered) and Qwen3's thinking rules (reasoning split from the content, kept
// only after the last real user query, the empty block on the last turn).
#include <optional>
#include <string>
#include <vector>

#include "chat_cases.h"

namespace agenttune::testing {

inline Turn qwen_calls(std::string content, std::vector<ToolCall> calls, std::optional<bool> loss = std::nullopt) {
  Turn t = turn(Role::Assistant, std::move(content), loss);
  t.tool_calls = std::move(calls);
  return t;
}

inline ChatCase qwen_case(std::string id, std::vector<ToolSpec> tools, std::vector<Turn> turns) {
  Conversation c;
  c.id = id;
  c.source = "test";
  c.tools = std::move(tools);
  c.turns = std::move(turns);
  return ChatCase{id, c};
}

inline std::vector<ChatCase> qwen_tool_cases() {
  using R = Role;
  const ToolSpec weather{"get_weather", R"({"type": "function", "function": {"name": "get_weather", "description": )"
                                        R"("Weather now.", "parameters": {"type": "object", "properties": {"city": )"
                                        R"({"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 1e1}}, )"
                                        R"("required": ["city"]}}})"};
  const ToolSpec search{"web.search", R"({"function": {"parameters": {"properties": {"q": {"type": "string"}}, "type": )"
                                      R"("object"}, "name": "web.search", "description": "Search the web; returns )"
                                      R"(<html> snippets \u00e9 \"quoted\"."}, "type": "function"})"};
  const ToolSpec spelled{"spell", R"({"type": "function", "function": {"name": "spell", "description": "Emits )"
                                  R"(<tool_call> and </tool_response> as text.", "parameters": {}}})"};
  const ToolCall paris{"get_weather", R"({"city": "Paris"})", "a"}, rome{"get_weather", R"({"city": "Rome", "days": 3})", "b"};
  const ToolCall find{"web.search", R"({"q": "Qwen tool calling \"format\" 😀", "page": 2, "score": 0.5})", ""};
  std::vector<ChatCase> out;
  out.push_back(qwen_case("qwen_parallel", {weather}, {
      turn(R::User, "Paris and Rome?"), qwen_calls("", {paris, rome}), turn(R::Tool, "21"), turn(R::Tool, "25"),
      turn(R::Assistant, "Paris 21 °C, Rome 25 °C.")}));
  out.push_back(qwen_case("qwen_text_then_call", {weather, search}, {
      turn(R::System, "Be concise."), turn(R::User, "Rain in Rome?"), qwen_calls("Let me check.", {rome}),
      turn(R::Tool, R"({"rain": false})"), turn(R::Assistant, "No rain.")}));
  out.push_back(qwen_case("qwen_three_calls", {weather, search}, {
      turn(R::User, "Everything."), qwen_calls("Three lookups:\n", {paris, find, rome}), turn(R::Tool, "a"),
      turn(R::Tool, "b"), turn(R::Tool, "c"), turn(R::Assistant, "Done.")}));
  out.push_back(qwen_case("qwen_calls_without_tools", {}, {
      turn(R::User, "Search it."), qwen_calls("", {find}), turn(R::Tool, "nothing"), turn(R::Assistant, "Nothing found.")}));
  out.push_back(qwen_case("qwen_untrained_calls", {weather}, {
      turn(R::User, "Paris?"), qwen_calls("Checking.", {paris}, false), turn(R::Tool, "21"),
      turn(R::Assistant, "21 °C.", true)}));
  out.push_back(qwen_case("qwen_rounds", {weather, search}, {
      turn(R::System, "Research assistant."), turn(R::User, "Weather in Paris, then search it."), qwen_calls("", {paris}),
      turn(R::Tool, "sunny"), qwen_calls("Now the search.", {find}), turn(R::Tool, "[]"),
      turn(R::Assistant, "Sunny; no results."), turn(R::User, "And Rome?"), qwen_calls("", {rome}),
      turn(R::Tool, "cloudy"), turn(R::Assistant, "Cloudy.")}));
  out.push_back(qwen_case("qwen_newline_content", {weather}, {
      turn(R::User, "Paris?"), qwen_calls("\n", {paris}), turn(R::Tool, "21"), turn(R::Assistant, "\n21\n")}));
  out.push_back(qwen_case("qwen_spelled_in_args", {search}, {
      turn(R::User, "Spell."), qwen_calls("", {ToolCall{"web.search", R"({"q": "<tool_call>x</tool_call><|im_end|>"})", ""}}),
      turn(R::Tool, "<tool_response>"), turn(R::Assistant, "ok")}));
  out.push_back(qwen_case("qwen_spelled_in_tools", {spelled}, {turn(R::User, "Hi."), turn(R::Assistant, "Hello.")}));
  out.push_back(qwen_case("qwen_tools_only_answer", {weather, search, spelled}, {
      turn(R::User, "No tools needed: 2+2?"), turn(R::Assistant, "4")}));
  out.push_back(qwen_case("qwen_call_last", {weather}, {turn(R::User, "Rome?"), qwen_calls("", {rome})}));
  out.push_back(qwen_case("qwen_empty_system_tools", {weather}, {
      turn(R::System, ""), turn(R::User, "Paris?"), qwen_calls("", {paris}), turn(R::Tool, "21"), turn(R::Assistant, "21.")}));
  return out;
}

// Qwen3's <think> rules; rendered by qwen3 and qwen3-no-think (the Qwen2.5 template has none).
inline std::vector<ChatCase> qwen3_think_cases() {
  using R = Role;
  const ToolSpec weather{"get_weather", R"({"type": "function", "function": {"name": "get_weather", "parameters": )"
                                        R"({"type": "object", "properties": {"city": {"type": "string"}}}}})"};
  const ToolCall paris{"get_weather", R"({"city": "Paris"})", ""};
  std::vector<ChatCase> out;
  out.push_back(qwen_case("think_last", {}, {
      turn(R::User, "2+2?"), turn(R::Assistant, "<think>\nadd them\n</think>\n\n4")}));
  out.push_back(qwen_case("think_history", {}, {
      turn(R::System, "Math tutor."), turn(R::User, "2+2?"), turn(R::Assistant, "<think>easy</think>4"),
      turn(R::User, "3+3?"), turn(R::Assistant, "<think>\nalso easy\n</think>\n\n6")}));
  out.push_back(qwen_case("think_tool_loop", {weather}, {
      turn(R::User, "Paris weather?"), qwen_calls("<think>\nI need the tool.\n</think>\n\n", {paris}),
      turn(R::Tool, "21"), turn(R::Assistant, "<think>\nThe tool said 21.\n</think>\n\nIt is 21 °C.")}));
  out.push_back(qwen_case("think_plain_mid_turns", {weather}, {
      turn(R::User, "Paris?"), qwen_calls("", {paris}), turn(R::Tool, "21"), turn(R::Assistant, "21 °C.")}));
  out.push_back(qwen_case("think_wrapped_user", {}, {
      turn(R::User, "Question?"), turn(R::Assistant, "<think>r1</think>a1"),
      turn(R::User, "<tool_response>\nresult\n</tool_response>"), turn(R::Assistant, "<think>r2</think>a2")}));
  out.push_back(qwen_case("think_unclosed", {}, {turn(R::User, "Hm?"), turn(R::Assistant, "<think>no end tag here")}));
  out.push_back(qwen_case("think_two_closes", {}, {
      turn(R::User, "Odd?"), turn(R::Assistant, "<think>a</think>b</think>\n\nc")}));
  out.push_back(qwen_case("think_newline_runs", {}, {
      turn(R::User, "Spacing?"), turn(R::Assistant, "\n\n<think>\n\n\nR\n\n</think>\n\n\nC\n")}));
  out.push_back(qwen_case("think_untrained_last", {}, {
      turn(R::User, "Q1"), turn(R::Assistant, "<think>x</think>A1"), turn(R::User, "Q2"),
      turn(R::Assistant, "<think>y</think>A2", false)}));
  out.push_back(qwen_case("think_no_user", {}, {turn(R::System, "Monologue."), turn(R::Assistant, "<think>z</think>Alone.")}));
  out.push_back(qwen_case("think_empty_reasoning", {}, {turn(R::User, "Fast?"), turn(R::Assistant, "<think>\n\n</think>\n\nYes.")}));
  out.push_back(qwen_case("think_calls_only", {weather}, {
      turn(R::System, "Use tools."), turn(R::User, "Paris?"), qwen_calls("<think>call it</think>", {paris})}));
  return out;
}

}  // namespace agenttune::testing
