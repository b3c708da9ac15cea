#pragma once
// Offline scoring of one agent reply against the gold assistant turn: does it follow the task's
// action syntax, is the tool it names one of those offered, are its arguments valid, is it the
// gold action. The exact rules per task are in docs/eval.md, "Scoring rules"; the parsers follow
// AgentBench.old and ToolBench (../shared/spec/agent-eval.md §1-§3).
#include <optional>
#include <string>
#include <string_view>

#include "agenttune/chat/agent_task.h"
#include "agenttune/chat/conversation.h"

namespace agenttune::eval {

// AgentTask, task_name and task_from_name come from chat/agent_task.h (the held-out split uses
// them too).
struct ActionScore {
  bool format_valid = false;       // follows the task's action syntax
  std::optional<bool> tool_valid;  // the tool/function/choice named is one offered (nullopt: none named)
  std::optional<bool> args_valid;  // arguments valid (JSON with the required keys, KG arity; nullopt: n/a)
  bool action_match = false;       // equal to gold after the documented normalisation
  bool calls_tool = false;         // the reply calls a tool/function/environment action at all
  bool refuses = false;            // non-empty reply that calls nothing (plain answer, finish, Final Answer)
  bool gold_calls_tool = false;    // the gold turn calls a tool (so a refusal is wrong)
  // The syntax both were read under: os, db, kg, alfworld, webshop, mind2web, toolbench (also
  // Agent-FLAN's ReAct tool calls), native (structured calls: hermes or llama3_json), json_call
  // or chat (docs/eval.md).
  std::string syntax;
  std::string reply_action, gold_action;  // normalised, for --show-failures
  std::string why;                        // first failing rule, human-readable; empty on a match
};

// `history`: the conversation up to (not including) the scored assistant turn (system prompt and
// first user turn = where the protocol and the offered tools are); `reply`: the model's decoded
// text; `gold`: the gold assistant turn.
ActionScore score_action(AgentTask task, const Conversation& history, std::string_view reply,
                         std::string_view gold);

// The text a gold assistant turn is scored as: its content, then each structured call
// (Turn::tool_calls) as a hermes <tool_call> block, which the native syntax reads whatever the
// family (docs/eval.md, "Native tool calls").
std::string scored_text(const Turn& gold);

// Hallucination (Agent-FLAN style). On a negative record (the offered tools do not fit, or none
// are offered) any call is one; on a positive one, a call to a tool that is not offered.
inline bool hallucinates(const ActionScore& s, bool negative) {
  return negative ? s.calls_tool : s.calls_tool && s.tool_valid == false;
}
// On a positive record whose gold turn calls a tool, a reply that calls nothing.
inline bool wrongly_refuses(const ActionScore& s, bool negative) {
  return !negative && s.gold_calls_tool && s.refuses;
}

}  // namespace agenttune::eval
