// Native tool calls, read as vLLM's tool parsers read a served model's reply
// (vllm/entrypoints/openai/tool_parsers: hermes_tool_parser.py for Qwen2.5/Qwen3,
// llama_tool_parser.py's llama3_json for Llama-3.x):
//   hermes       when the reply holds "<tool_call>": every `<tool_call>(.*?)</tool_call>` (or an
//                unclosed one running to the end) is a JSON object with "name" and "arguments";
//                the text before the first tag is content. Any block that fails fails the reply.
//   llama3_json  otherwise, when the reply holds "<|python_tag|>" or "{": the first run of JSON
//                objects joined by ';' found by vLLM's regex (brace-blind, two levels of nesting at
//                most, so an argument object nested deeper is not read, as in vLLM), each with
//                "name" and "arguments" or "parameters"; the text around it is ignored.
// vLLM passes a reply its parser cannot read to the user as plain text. We score it so only when
// it does not look like a call; one that does (starts with "{", "<|python_tag|>" or holds
// "<tool_call>") is an attempted call in no valid format.
#include <fmt/format.h>

#include "action_internal.h"

namespace agenttune::eval::action_detail {
namespace {

using nlohmann::json;

constexpr std::string_view kOpen = "<tool_call>", kClose = "</tool_call>", kPythonTag = "<|python_tag|>";

struct Call {
  std::string name;
  json arguments;
};

// vLLM's `{[^{}]*(?:{[^{}]*}[^{}]*)*}` anchored at s[i] == '{': the end of the match, or npos.
size_t object_end(std::string_view s, size_t i) {
  bool nested = false;
  for (size_t k = i + 1; k < s.size(); ++k) {
    if (s[k] == '{') {
      if (nested) return std::string_view::npos;
      nested = true;
    } else if (s[k] == '}') {
      if (!nested) return k + 1;
      nested = false;
    }
  }
  return std::string_view::npos;
}

// The regex's leftmost match including its `(?:\s*;\s*{...})*` tail.
std::optional<std::string_view> llama3_match(std::string_view s) {
  for (size_t i = s.find('{'); i != std::string_view::npos; i = s.find('{', i + 1)) {
    size_t end = object_end(s, i);
    if (end == std::string_view::npos) continue;
    for (;;) {
      size_t k = end;
      while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
      if (k >= s.size() || s[k] != ';') break;
      ++k;
      while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
      size_t next = k < s.size() && s[k] == '{' ? object_end(s, k) : std::string_view::npos;
      if (next == std::string_view::npos) break;
      end = next;
    }
    return s.substr(i, end - i);
  }
  return std::nullopt;
}

// json.loads of one call; `alt` is the second key accepted for the arguments (llama3_json only).
std::optional<Call> load_call(std::string_view text, const char* alt) {
  auto j = parse_json(text);
  if (!j || !j->is_object()) return std::nullopt;
  auto name = j->find("name");
  if (name == j->end() || !name->is_string()) return std::nullopt;
  auto args = j->find("arguments");
  if (args == j->end() && alt) args = j->find(alt);
  if (args == j->end()) return std::nullopt;
  return Call{name->get<std::string>(), *args};
}

std::optional<std::vector<Call>> hermes_calls(std::string_view t) {
  std::vector<Call> calls;
  for (size_t p = t.find(kOpen); p != std::string_view::npos; p = t.find(kOpen, p)) {
    size_t body = p + kOpen.size();
    size_t close = t.find(kClose, body);
    auto call = load_call(t.substr(body, close == std::string_view::npos ? std::string_view::npos : close - body), nullptr);
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
    p = close == std::string_view::npos ? t.size() : close + kClose.size();
  }
  return calls;
}

std::optional<std::vector<Call>> llama3_calls(std::string_view t) {
  auto m = llama3_match(t);
  if (!m) return std::nullopt;
  std::vector<Call> calls;
  for (size_t b = 0; b <= m->size();) {
    size_t semi = m->find(';', b);
    std::string_view part = trim(m->substr(b, semi == std::string_view::npos ? std::string_view::npos : semi - b));
    if (!part.empty()) {
      auto call = load_call(part, "parameters");
      if (!call) return std::nullopt;
      calls.push_back(std::move(*call));
    }
    if (semi == std::string_view::npos) break;
    b = semi + 1;
  }
  return calls;
}

void check_call(const Call& c, const Offered& offered, Step& s) {
  const bool listed = offered.find(c.name) != nullptr;
  s.tool_valid = s.tool_valid.value_or(true) && listed;
  if (!listed)
    s.fail(offered.tools.empty() ? fmt::format("calls '{}' but no tools are offered", c.name)
                                 : fmt::format("'{}' is not one of the offered tools", c.name));
  Step one;
  check_arguments(c.arguments, offered.find(c.name), one);
  s.args_valid = s.args_valid.value_or(true) && *one.args_valid;
  if (!one.why.empty()) s.fail(one.why);
}

}  // namespace

Step parse_native_call(std::string_view text, const Conversation& history) {
  Step s;
  std::string_view t = trim(text);
  const bool hermes = t.find(kOpen) != std::string_view::npos;
  if (t.starts_with(kPythonTag)) t = trim(t.substr(kPythonTag.size()));
  const bool looks_like_call = hermes || t.starts_with("{") || trim(text).starts_with(kPythonTag);
  auto calls = hermes ? hermes_calls(t) : llama3_calls(t);
  if (!calls || calls->empty()) {
    if (looks_like_call) {
      s.call = true;
      s.fail(hermes ? "a <tool_call> block is not a JSON object with \"name\" and \"arguments\""
                    : "not a JSON call {\"name\": ..., \"parameters\": {...}} as vLLM's llama3_json parser reads it");
      return s;
    }
    s.valid = true;  // a plain reply: the answer, calling nothing
    s.action = collapse_ws(t);
    return s;
  }
  s.valid = s.call = true;
  const Offered offered = offered_tools(history);
  for (const Call& c : *calls) {
    check_call(c, offered, s);
    s.action += (s.action.empty() ? "" : "; ") + c.name + " " + canonical_json(c.arguments);
  }
  return s;
}

}  // namespace agenttune::eval::action_detail

namespace agenttune::eval {

std::string scored_text(const Turn& turn) {
  using action_detail::kClose;
  using action_detail::kOpen;
  std::string out = turn.content;
  for (const ToolCall& c : turn.tool_calls)
    out += fmt::format("{}{}\n{{\"name\": {}, \"arguments\": {}}}\n{}", out.empty() ? "" : "\n", kOpen,
                       nlohmann::json(c.name).dump(), c.arguments.empty() ? "{}" : c.arguments, kClose);
  return out;
}

}  // namespace agenttune::eval
