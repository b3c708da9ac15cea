// Function calls: ToolBench's Thought/Action/Action Input (also Agent-FLAN's ReAct form, which
// may end with Thought/Final Answer) and the JSON {"name", "arguments"} form
// (../shared/spec/agent-eval.md §2).
#include <fmt/format.h>

#include "action_internal.h"

namespace agenttune::eval::action_detail {
namespace {

using nlohmann::json;

// Finish's own rules (ToolBench's _step): return_type give_answer or give_up_and_restart, and
// give_answer carries a final_answer string.
void check_finish(const json& args, const ToolSchema* schema, Step& s) {
  check_arguments(args, schema, s);
  if (!*s.args_valid) return;
  auto rt = args.find("return_type");
  auto fa = args.find("final_answer");
  if (rt == args.end() || (*rt != "give_answer" && *rt != "give_up_and_restart"))
    s.fail("Finish needs return_type give_answer or give_up_and_restart");
  else if (*rt == "give_answer" && (fa == args.end() || !fa->is_string()))
    s.fail("Finish with give_answer needs a final_answer string");
  else
    return;
  s.args_valid = false;
}

void check_tool(std::string_view name, const Offered& offered, Step& s) {
  s.tool_valid = offered.find(name) != nullptr;
  if (!*s.tool_valid)
    s.fail(offered.tools.empty() ? fmt::format("calls '{}' but no tools are offered", name)
                                 : fmt::format("'{}' is not one of the offered tools", name));
}

// Index of the first "Action:" line (not "Action Input:").
std::optional<size_t> action_line(const std::vector<std::string_view>& lines) {
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view l = trim(lines[i]);
    if (l.starts_with("Action:") && !l.starts_with("Action Input:")) return i;
  }
  return std::nullopt;
}

}  // namespace

Step parse_tool_react(std::string_view text, const Conversation& history) {
  Step s;
  std::string_view t = trim(text);
  auto lines = lines_of(t);
  auto at = action_line(lines);
  if (!at) {
    size_t fa = t.find("Final Answer:");
    if (fa != std::string_view::npos && protocol_text(history).find("Final Answer") != std::string::npos) {
      s.valid = true;
      s.action = "Final Answer: " + collapse_ws(t.substr(fa + 13));
    } else {
      s.fail("no 'Action:' and 'Action Input:' lines");
    }
    return s;
  }
  std::string name(trim(trim(lines[*at]).substr(7)));
  s.call = name != "Finish";
  if (name.empty()) {
    s.fail("empty 'Action:'");
    return s;
  }
  const Offered offered = offered_tools(history);
  std::string_view next = *at + 1 < lines.size() ? trim(lines[*at + 1]) : std::string_view{};
  if (!next.starts_with("Action Input:")) {
    s.fail("'Action:' not followed by an 'Action Input:' line");
    check_tool(name, offered, s);
    return s;
  }
  // Everything after "Action Input:" is the input (ToolBench's react_parser); empty means {}.
  std::string_view input = trim(t.substr(static_cast<size_t>(next.data() - t.data()) + 13));
  s.valid = true;
  check_tool(name, offered, s);
  auto args = input.empty() ? std::optional<json>(json::object()) : parse_json(input);
  if (!args) {
    s.args_valid = false;
    s.fail("Action Input is not JSON");
    s.action = name + " " + collapse_ws(input);
    return s;
  }
  if (name == "Finish") check_finish(*args, offered.find(name), s);
  else check_arguments(*args, offered.find(name), s);
  s.action = name + " " + canonical_json(*args);
  return s;
}

Step parse_json_call(std::string_view text, const Conversation& history) {
  Step s;
  std::string_view t = trim(text);
  if (t.starts_with("```json\n") && t.ends_with("```")) t = trim(t.substr(8, t.size() - 11));
  auto j = parse_json(t);
  if (!j || !j->is_object() || !j->contains("name") || !(*j)["name"].is_string()) {
    s.fail("not a JSON object with a string \"name\"");
    return s;
  }
  const std::string name = (*j)["name"].get<std::string>();
  s.valid = s.call = true;
  const Offered offered = offered_tools(history);
  check_tool(name, offered, s);
  json args = j->value("arguments", json::object());
  if (args.is_string())
    if (auto parsed = parse_json(args.get<std::string>())) args = *parsed;
  check_arguments(args, offered.find(name), s);
  s.action = name + " " + canonical_json(args);
  return s;
}

}  // namespace agenttune::eval::action_detail
