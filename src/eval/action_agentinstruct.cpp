// AgentInstruct's OS, DB and KG actions, read as AgentBench.old's parsers read them
// (../shared/spec/agent-eval.md §1.1-§1.3), then normalised for comparison with the gold turn.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <map>

#include "action_internal.h"
#include "agenttune/transforms/tool_list.h"
#include "agenttune/util/strings.h"

namespace agenttune::eval::action_detail {
namespace {

using nlohmann::json;

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return lower(s.substr(0, prefix.size())) == prefix;
}

// Every `Act:\s*(.+)`, last first (the parser scans them in that order); \s* may cross lines.
std::vector<std::string_view> os_acts(std::string_view text) {
  std::vector<std::string_view> acts;
  for (size_t p = text.find("Act:"); p != std::string_view::npos; p = text.find("Act:", p + 1)) {
    size_t b = p + 4;
    while (b < text.size() && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
    size_t e = text.find('\n', b);
    std::string_view act = trim(text.substr(b, e == std::string_view::npos ? e : e - b));
    if (!act.empty()) acts.push_back(act);
  }
  std::reverse(acts.begin(), acts.end());
  return acts;
}

// DB's `Final Answer: [...]`: a JSON or Python list, else the raw text as one value; numbers by
// value; one value compared alone, several as a set (AgentBench's metric).
std::string db_answer(std::string_view raw) {
  std::vector<std::string> values;
  std::optional<json> list = parse_json(raw);
  if (!list || !list->is_array()) list = parse_python_literal(raw);
  if (list && list->is_array()) {
    for (const auto& v : *list) values.push_back(canonical_scalar(v.is_string() ? v.get<std::string>() : v.dump()));
  } else {
    values.push_back(canonical_scalar(raw));
  }
  if (values.size() > 1) {
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
  }
  return fmt::format("Answer: [{}]", fmt::join(values, " | "));
}

// KG arguments: "variable #0" is #0, relation ids (a.b.c) keep their case, entity names fold.
std::string kg_argument(std::string_view a) {
  a = trim(a);
  for (std::string_view prefix : {"variable ", "Variable "})
    if (a.starts_with(prefix)) a = trim(a.substr(prefix.size()));
  bool relation = a.find('.') != std::string_view::npos && a.find(' ') == std::string_view::npos;
  return a.starts_with('#') || relation ? std::string(a) : lower(a);
}

// The functions a KG prompt offers, "N. name(p1: t, p2: t) -> ..." lines, with their arity;
// AgentBench's seven when the prompt lists none.
std::map<std::string, size_t> kg_functions(const Conversation& history) {
  std::map<std::string, size_t> out;
  for (std::string_view line : lines_of(protocol_text(history))) {
    line = trim(line);
    size_t dot = line.find(". ");
    auto numeral = line.substr(0, dot == std::string_view::npos ? 0 : dot);
    if (numeral.empty() || numeral.find_first_not_of("0123456789") != std::string_view::npos) continue;
    std::string_view call = trim(line.substr(dot + 2));
    size_t open = call.find('('), close = call.find(')');
    if (open == std::string_view::npos || close == std::string_view::npos || close < open) continue;
    std::string_view name = call.substr(0, open), params = trim(call.substr(open + 1, close - open - 1));
    if (!is_identifier(name)) continue;
    out[std::string(name)] = params.empty() ? 0 : static_cast<size_t>(std::count(params.begin(), params.end(), ',')) + 1;
  }
  if (out.empty())
    out = {{"get_relations", 1}, {"get_neighbors", 2}, {"intersection", 2}, {"get_attributes", 1},
           {"argmax", 2},        {"argmin", 2},        {"count", 1}};
  return out;
}

// OS's bash and DB's Operation: a call whose command is in fenced blocks (OS joins them all, DB
// runs the first); without one the reply is format-invalid.
Step fenced_command(std::string_view text, std::string_view lang, std::string_view act, std::string_view label,
                    std::string (*normalise)(std::string_view), bool all_blocks) {
  Step s;
  s.call = true;
  auto blocks = fenced_blocks(text, lang);
  if (blocks.empty()) {
    s.fail(fmt::format("{} without a ```{} block", act, lang));
    return s;
  }
  s.valid = true;
  s.action = fmt::format("{}: {}", label, normalise(all_blocks ? fmt::format("{}", fmt::join(blocks, "\n\n")) : blocks.front()));
  return s;
}

}  // namespace

Step parse_os(std::string_view text, const Conversation&) {
  Step s;
  for (std::string_view act : os_acts(text)) {
    if (starts_with_ci(act, "bash")) return fenced_command(text, "bash", "Act: bash", "bash", normalise_bash, true);
    if (starts_with_ci(act, "finish")) {
      s.valid = true;
      s.action = "finish";
      return s;
    }
    if (starts_with_ci(act, "answer")) {
      size_t open = act.find('('), close = act.rfind(')');
      if (open == std::string_view::npos || close == std::string_view::npos || close < open) continue;
      s.valid = true;
      s.action = "answer: " + canonical_scalar(act.substr(open + 1, close - open - 1));
      return s;
    }
  }
  s.fail("no 'Act: bash' with a ```bash block, 'Act: answer(...)' or 'Act: finish'");
  return s;
}

Step parse_db(std::string_view text, const Conversation&) {
  Step s;
  // `Action: (.*?)\n`: the first "Action: " that a newline follows, case-sensitive.
  size_t p = text.find("Action: ");
  size_t nl = p == std::string_view::npos ? p : text.find('\n', p);
  if (nl == std::string_view::npos) {
    s.fail("no 'Action: Operation' or 'Action: Answer' line followed by a newline");
    return s;
  }
  std::string_view action = text.substr(p + 8, nl - p - 8);
  if (action == "Operation") return fenced_command(text, "sql", "Action: Operation", "Operation", normalise_sql, false);
  size_t fa = text.find("\nFinal Answer:");
  if (action != "Answer" || fa == std::string_view::npos) {
    s.fail(action == "Answer" ? "Action: Answer without a 'Final Answer:' line"
                              : fmt::format("unknown action '{}' (Operation or Answer)", action));
    return s;
  }
  std::string_view rest = text.substr(fa + 14);
  s.valid = true;
  s.action = db_answer(rest.substr(0, rest.find('\n')));
  return s;
}

Step parse_kg(std::string_view text, const Conversation& history) {
  Step s;
  std::string t(text.substr(0, text.find("Observation:")));
  for (size_t p = t.find("\\_"); p != std::string::npos; p = t.find("\\_", p)) t.erase(p, 1);
  for (std::string_view marker : {"Final Answer: #", "Find Answer: #"}) {
    size_t p = t.find(marker);
    if (p == std::string::npos) continue;
    size_t d = p + marker.size(), e = d;
    while (e < t.size() && std::isdigit(static_cast<unsigned char>(t[e]))) ++e;
    if (e == d) continue;
    s.valid = true;
    s.action = "Final Answer: #" + std::to_string(std::stoll(t.substr(d, e - d)));
    return s;
  }
  for (std::string_view line : lines_of(t)) {
    if (!line.starts_with("Action") || line.find(':') == std::string_view::npos) continue;
    // First `(\w+)\(`, then its arguments up to the first ')'.
    size_t open = line.find('(');
    size_t b = open;
    while (b > 0 && (std::isalnum(static_cast<unsigned char>(line[b - 1])) || line[b - 1] == '_')) --b;
    size_t close = open == std::string_view::npos ? open : line.find(')', open + 2);
    if (open == std::string_view::npos || b == open || close == std::string_view::npos) break;
    std::string name(line.substr(b, open - b));
    std::vector<std::string> args;
    for (const std::string& a : split(line.substr(open + 1, close - open - 1), ',')) args.push_back(kg_argument(a));
    s.valid = s.call = true;
    s.action = fmt::format("{}({})", name, fmt::join(args, ", "));
    auto offered = kg_functions(history);
    auto fn = offered.find(name);
    s.tool_valid = fn != offered.end();
    if (!*s.tool_valid) {
      s.fail(fmt::format("function '{}' is not one the prompt offers", name));
      return s;
    }
    s.args_valid = args.size() == fn->second &&
                   std::none_of(args.begin(), args.end(), [](const std::string& a) { return a.empty(); });
    if (!*s.args_valid) s.fail(fmt::format("{} takes {} argument(s), got {}", name, fn->second, args.size()));
    return s;
  }
  s.fail("no 'Action: fn(args)' line and no 'Final Answer: #k'");
  return s;
}

}  // namespace agenttune::eval::action_detail
