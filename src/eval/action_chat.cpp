// The chat form (Agent-FLAN's aligned turns, negatives, plain chat): text without ReAct markers.
// The gold turn says what is asked: a tool's name, JSON arguments, a code block, or free text.
#include <fmt/format.h>

#include "action_internal.h"

namespace agenttune::eval::action_detail {
namespace {

using nlohmann::json;

std::optional<json> json_in(std::string_view t) {
  t = trim(t);
  if (t.starts_with("```json\n") && t.ends_with("```")) t = trim(t.substr(8, t.size() - 11));
  return parse_json(t);
}

// Does a plain-text reply call a tool anyway (Agent-H's format- and action-level signs): an
// action line of any ReAct style, a JSON object with a "name", or an offered tool's bare name.
bool calls_anyway(std::string_view t, const Offered& offered) {
  for (std::string_view line : lines_of(t)) {
    line = trim(line);
    for (std::string_view m : {"Action:", "Action Input:", "Act:", "ACTION:"})
      if (line.starts_with(m)) return true;
  }
  if (auto j = json_in(t); j && j->is_object() && j->contains("name")) return true;
  return offered.find(trim(t)) != nullptr;
}

// A whole-reply code block compares by its language's normalisation, JSON by value, the rest as
// text with whitespace runs collapsed.
std::string canonical_text(std::string_view t) {
  t = trim(t);
  if (t.starts_with("```") && t.ends_with("```") && t.size() > 6 && t.find('\n') != std::string_view::npos) {
    std::string_view lang = trim(t.substr(3, t.find('\n') - 3));
    std::string_view body = t.substr(t.find('\n') + 1, t.size() - 3 - t.find('\n') - 1);
    if (lang == "sql") return "sql: " + normalise_sql(body);
    if (lang == "bash" || lang == "sh" || lang == "shell") return "bash: " + normalise_bash(body);
    if (auto j = parse_json(body); j && lang == "json") return canonical_json(*j);
    return fmt::format("{}: {}", lang, collapse_ws(body));
  }
  if (auto j = parse_json(t); j && (j->is_object() || j->is_array())) return canonical_json(*j);
  return collapse_ws(t);
}

// The tool the conversation's last assistant turn named (the chat form asks for its arguments
// next).
const ToolSchema* last_named_tool(const Conversation& history, const Offered& offered) {
  for (auto it = history.turns.rbegin(); it != history.turns.rend(); ++it)
    if (it->role == Role::Assistant) return offered.find(trim(it->content));
  return nullptr;
}

}  // namespace

Step parse_chat(std::string_view text, std::string_view gold, const Conversation& history) {
  Step s;
  std::string_view t = trim(text), g = trim(gold);
  const Offered offered = offered_tools(history);
  s.call = !t.empty() && calls_anyway(t, offered);
  s.action = canonical_text(t);
  if (t.empty()) {
    s.fail("empty reply");
    return s;
  }
  if (has_react_marker(t) && !has_react_marker(g)) {
    s.fail("ReAct markers (Thought:/Action:/...) in a chat-form reply");
    return s;
  }
  s.valid = true;
  if (offered.find(g)) {  // the turn asks which tool to call
    if (is_identifier(t)) {
      s.call = true;
      s.tool_valid = offered.find(t) != nullptr;
      if (!*s.tool_valid) s.fail(fmt::format("'{}' is not one of the offered tools", t));
    }
    return s;
  }
  if (auto gj = json_in(g); gj && gj->is_object()) {  // the turn asks for arguments
    auto j = json_in(t);
    if (!j) {
      s.valid = false;
      s.fail("the reply is not JSON where the gold turn gives JSON arguments");
      return s;
    }
    check_arguments(*j, last_named_tool(history, offered), s);
  }
  return s;
}

}  // namespace agenttune::eval::action_detail
