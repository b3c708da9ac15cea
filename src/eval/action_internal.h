#pragma once
// Shared by the action scorers: one parsed step, the tools a history offers, and the text
// normalisations the rules in docs/eval.md ("Scoring rules") name.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agenttune/chat/conversation.h"

namespace agenttune::eval::action_detail {

// One reply (or gold turn) read under one task's syntax.
struct Step {
  bool valid = false;    // follows the syntax
  bool call = false;     // calls a tool/function/env action (set for an attempted call too)
  std::string action;    // canonical form; two steps match when both are valid and these are equal
  std::optional<bool> tool_valid, args_valid;
  std::string why;       // first failing rule (format, then tool, then arguments)

  void fail(std::string reason) {
    if (why.empty()) why = std::move(reason);
  }
};

struct ToolSchema {
  std::string name;
  std::vector<std::string> required;
  std::optional<std::set<std::string>> allowed;  // nullopt: the prompt does not list parameters
  std::map<std::string, std::string> types;      // lower-cased schema type per parameter
  std::map<std::string, nlohmann::json> enums;   // allowed values per parameter
};

// The tools a conversation offers, read from its system turns and first user turn.
struct Offered {
  std::vector<ToolSchema> tools;
  const ToolSchema* find(std::string_view name) const;
};
Offered offered_tools(const Conversation& history);

// System turns and the first user turn: where each task states its protocol.
std::string protocol_text(const Conversation& history);
// The last user or tool turn (the observation the reply answers); empty when none.
std::string_view last_observation(const Conversation& history);

// Argument checks against a schema: a JSON object, required keys present, no key outside the
// listed ones, values of the listed type and enum. Sets args_valid and why on `step`.
void check_arguments(const nlohmann::json& args, const ToolSchema* schema, Step& step);

// --- text ---
std::string_view trim(std::string_view s);
std::string collapse_ws(std::string_view s);  // whitespace runs -> one space, trimmed
std::string lower(std::string_view s);
std::vector<std::string_view> lines_of(std::string_view s);
// The rest of the first line that starts (after indentation) with `marker`.
std::optional<std::string_view> line_after(std::string_view text, std::string_view marker);
// The contents of every "```<lang>\n...\n```" block, in order.
std::vector<std::string> fenced_blocks(std::string_view text, std::string_view lang);
// A number's shortest text when `s` is one number ("7.0" -> "7"), else `s` trimmed.
std::string canonical_scalar(std::string_view s);
// Sorted keys, integral floats as integers, compact.
std::string canonical_json(const nlohmann::json& j);
std::optional<nlohmann::json> parse_json(std::string_view s);
std::string normalise_bash(std::string_view script);
std::string normalise_sql(std::string_view statement);
bool has_react_marker(std::string_view text);
bool is_identifier(std::string_view s);

// --- per task syntax (docs/eval.md) ---
Step parse_os(std::string_view text, const Conversation& history);
Step parse_db(std::string_view text, const Conversation& history);
Step parse_kg(std::string_view text, const Conversation& history);
Step parse_alfworld(std::string_view text, const Conversation& history);
Step parse_webshop(std::string_view text, const Conversation& history);
Step parse_mind2web(std::string_view text, const Conversation& history);
// ToolBench / Agent-FLAN ReAct: Thought/Action/Action Input, Finish, or (where the prompt
// offers it) Thought/Final Answer.
Step parse_tool_react(std::string_view text, const Conversation& history);
// {"name": ..., "arguments": {...}} (Agent-FLAN's JSON format-following replies).
Step parse_json_call(std::string_view text, const Conversation& history);
// A family's native calls as vLLM's hermes (Qwen: <tool_call> blocks) or llama3_json (Llama-3.x:
// a JSON object with name and parameters) parser reads them; a plain reply is a valid answer.
Step parse_native_call(std::string_view text, const Conversation& history);
// Chat form: plain text without ReAct markers; `gold` decides what the turn asks for (a tool
// name, JSON arguments, a code block, free text).
Step parse_chat(std::string_view text, std::string_view gold, const Conversation& history);

}  // namespace agenttune::eval::action_detail
