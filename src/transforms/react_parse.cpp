#include <nlohmann/json.hpp>

#include <cctype>
#include <optional>

#include "agenttune/transforms/react.h"
#include "internal.h"

namespace agenttune {
namespace {

using transforms_detail::trim;

constexpr std::string_view kThoughtMarkers[] = {"Thought:", "THOUGHT:", "Think:"};
constexpr std::string_view kActionMarkers[] = {"Action:", "ACTION:", "Act:"};
constexpr std::string_view kInputMarker = "Action Input:";
constexpr std::string_view kFinalMarker = "Final Answer:";

std::vector<std::string_view> lines_of(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t nl = s.find('\n', start);
    out.push_back(s.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start));
    if (nl == std::string_view::npos) return out;
    start = nl + 1;
  }
}

// The text after `marker` when the (left-trimmed) line starts with one of them.
template <size_t N>
std::optional<std::string_view> after_marker(std::string_view line,
                                             const std::string_view (&markers)[N]) {
  line = line.substr(std::min(line.size(), line.find_first_not_of(" \t")));
  for (auto m : markers)
    if (line.starts_with(m)) return line.substr(m.size());
  return std::nullopt;
}
std::optional<std::string_view> after_marker(std::string_view line, std::string_view marker) {
  const std::string_view one[] = {marker};
  return after_marker(line, one);
}

// Text of lines [from, to) joined back, as it stood in the turn.
std::string_view span(std::string_view text, const std::vector<std::string_view>& lines,
                      size_t from, size_t to) {
  if (from >= to) return {};
  const char* b = lines[from].data();
  const char* e = lines[to - 1].data() + lines[to - 1].size();
  return text.substr(static_cast<size_t>(b - text.data()), static_cast<size_t>(e - b));
}

std::string strip_thought_marker(std::string_view s) {
  s = trim(s);
  if (auto rest = after_marker(s, kThoughtMarkers)) s = *rest;
  return std::string(trim(s));
}

bool is_identifier(std::string_view s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '_' || c == '.')) return false;
  return true;
}

// "name(args)" or "name[args]" with a plain identifier before the bracket.
std::optional<std::pair<std::string_view, std::string_view>> bracket_call(std::string_view s,
                                                                           char open, char close) {
  size_t p = s.find(open);
  if (p == std::string_view::npos || s.back() != close || !is_identifier(s.substr(0, p)))
    return std::nullopt;
  return std::pair{s.substr(0, p), s.substr(p + 1, s.size() - p - 2)};
}

ReactParse parsed_call(std::string thought, std::string_view action, std::string_view args,
                       bool tool_call) {
  ReactParse r{ReactMatch::Parsed, {}};
  r.step.thought = std::move(thought);
  r.step.action = std::string(trim(action));
  r.step.arguments = std::string(trim(args));
  r.step.tool_call = tool_call;
  return r;
}

ReactParse parsed_answer(std::string thought, std::string_view answer) {
  ReactParse r{ReactMatch::Parsed, {}};
  r.step.kind = StepKind::Answer;
  r.step.thought = std::move(thought);
  r.step.answer = std::string(trim(answer));
  return r;
}

// ToolBench ends a trajectory by calling Finish; with give_answer its final_answer is the
// reply the user sees, so it is an answer rather than a call.
std::optional<std::string> finish_answer(std::string_view args) {
  auto j = nlohmann::json::parse(args, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  auto rt = j.find("return_type");
  auto fa = j.find("final_answer");
  if (rt == j.end() || *rt != "give_answer" || fa == j.end() || !fa->is_string()) return std::nullopt;
  return fa->get<std::string>();
}

}  // namespace

ReactParse parse_react(std::string_view raw) {
  std::string_view text = trim(raw);
  const ReactParse unparseable{ReactMatch::Unparseable, {}};
  auto lines = lines_of(text);
  std::optional<size_t> action_line, final_line;
  bool any_marker = !lines.empty() && after_marker(lines[0], kThoughtMarkers).has_value();
  for (size_t i = 0; i < lines.size(); ++i) {
    if (after_marker(lines[i], kActionMarkers)) {
      if (action_line) return unparseable;  // two actions in one turn
      action_line = i;
    } else if (after_marker(lines[i], kFinalMarker)) {
      if (!final_line) final_line = i;
    } else if (after_marker(lines[i], kInputMarker)) {
      any_marker = true;
    }
  }
  if (!action_line) {
    if (!final_line) return any_marker ? unparseable : ReactParse{};
    std::string_view answer = span(text, lines, *final_line, lines.size());
    answer = answer.substr(answer.find(kFinalMarker) + kFinalMarker.size());
    return parsed_answer(strip_thought_marker(span(text, lines, 0, *final_line)), answer);
  }

  std::string thought = strip_thought_marker(span(text, lines, 0, *action_line));
  std::string_view action = trim(*after_marker(lines[*action_line], kActionMarkers));
  std::string_view rest = trim(span(text, lines, *action_line + 1, lines.size()));
  if (action.empty()) return unparseable;

  if (auto input = after_marker(rest, kInputMarker)) {
    if (action == "Finish")
      if (auto answer = finish_answer(trim(*input))) return parsed_answer(thought, *answer);
    return parsed_call(thought, action, *input, /*tool_call=*/true);
  }
  if (action == "Answer") {
    auto answer = after_marker(rest, kFinalMarker);
    return answer ? parsed_answer(thought, *answer) : unparseable;
  }
  if (rest.empty()) {
    if (auto call = bracket_call(action, '(', ')')) {
      if (call->first == "answer") return parsed_answer(thought, call->second);
      return parsed_call(thought, call->first, call->second, false);
    }
    if (auto call = bracket_call(action, '[', ']'))
      return parsed_call(thought, call->first, call->second, false);
    return parsed_call(thought, action, {}, false);
  }
  // OS `Act: bash` / DB `Action: Operation`: one word, then the command as a fenced block.
  if (rest.starts_with("```") && action.find(' ') == std::string_view::npos)
    return parsed_call(thought, action, rest, false);
  return unparseable;
}

}  // namespace agenttune
