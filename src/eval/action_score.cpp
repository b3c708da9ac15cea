// score_action: picks the syntax a turn is read under (the task's, or for Agent-FLAN the one its
// protocol prompt sets up), reads the gold turn and the reply under it and compares them.
#include "agenttune/eval/action_score.h"

#include "action_internal.h"

namespace agenttune::eval {
namespace {

using namespace action_detail;
using Parse = Step (*)(std::string_view, const Conversation&);
struct Syntax {
  Parse parse = nullptr;
  const char* name = "chat";
};

Syntax syntax_of(AgentTask task) {
  switch (task) {
    case AgentTask::Os: return {parse_os, "os"};
    case AgentTask::Db: return {parse_db, "db"};
    case AgentTask::Kg: return {parse_kg, "kg"};
    case AgentTask::Alfworld: return {parse_alfworld, "alfworld"};
    case AgentTask::Webshop: return {parse_webshop, "webshop"};
    case AgentTask::Mind2web: return {parse_mind2web, "mind2web"};
    case AgentTask::ToolBench: return {parse_tool_react, "toolbench"};
    case AgentTask::AgentFlan:
    case AgentTask::Chat: return {};
  }
  return {};
}

// Agent-FLAN files mix AgentInstruct and ToolBench trajectories: the protocol prompt says which
// syntax a ReAct turn follows.
Syntax agentflan_syntax(const Conversation& history) {
  const std::string p = protocol_text(history);
  auto has = [&](std::string_view s) { return p.find(s) != std::string::npos; };
  if (has("Action Input") && !offered_tools(history).tools.empty()) return syntax_of(AgentTask::ToolBench);
  if (has("Act: bash") || has("Act: answer")) return syntax_of(AgentTask::Os);
  if (has("Action: Operation")) return syntax_of(AgentTask::Db);
  if (has("get_relations")) return syntax_of(AgentTask::Kg);
  if (has("ACTION:")) return syntax_of(AgentTask::Alfworld);
  if (has("search[") && has("click[")) return syntax_of(AgentTask::Webshop);
  if (has("None of the above")) return syntax_of(AgentTask::Mind2web);
  return {};
}

struct Read {
  Step reply, gold;
  const char* syntax;
};

// Gold and reply under the same syntax: native when tools are offered structured, the task's when
// the gold turn follows it, else the JSON call form when the gold is one, else the chat form.
Read read_both(AgentTask task, const Conversation& history, std::string_view reply, std::string_view gold) {
  // Offered as structured tools (or with a structured gold call), the model was tuned on its
  // family's native call format, whatever the task.
  if (!history.tools.empty() || gold.find("<tool_call>") != std::string_view::npos)
    return {parse_native_call(reply, history), parse_native_call(gold, history), "native"};
  Syntax syn = task == AgentTask::AgentFlan ? agentflan_syntax(history) : syntax_of(task);
  if (syn.parse) {
    Step g = syn.parse(gold, history);
    if (g.valid) return {syn.parse(reply, history), std::move(g), syn.name};
  }
  if (Step g = parse_json_call(gold, history); g.valid) return {parse_json_call(reply, history), std::move(g), "json_call"};
  return {parse_chat(reply, gold, history), parse_chat(gold, gold, history), "chat"};
}

}  // namespace

ActionScore score_action(AgentTask task, const Conversation& history, std::string_view reply,
                         std::string_view gold) {
  auto [r, g, syntax] = read_both(task, history, reply, gold);
  ActionScore s;
  s.syntax = syntax;
  s.format_valid = r.valid;
  s.tool_valid = r.tool_valid;
  s.args_valid = r.args_valid;
  s.calls_tool = r.call;
  s.refuses = !r.call && !trim(reply).empty();
  s.gold_calls_tool = g.call;
  s.reply_action = r.action;
  s.gold_action = g.action;
  s.action_match = r.valid && r.action == g.action;
  s.why = !r.why.empty() ? r.why : s.action_match ? "" : "the action differs from the gold one";
  return s;
}

}  // namespace agenttune::eval
