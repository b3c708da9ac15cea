#include "agenttune/transforms/native_tool_calls.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>

#include "agenttune/chat/template_tokenizers.h"
#include "agenttune/transforms/react.h"
#include "agenttune/transforms/tool_list.h"
#include "internal.h"

namespace agenttune {
namespace {

using ojson = nlohmann::ordered_json;
using transforms_detail::trim;

// Why a conversation stays text; thrown out of convert() so a half-converted one is never kept.
struct StaysText {
  const char* reason;
};

bool named_dict(const ojson& e) { return e.is_object() && e.contains("name") && e["name"].is_string(); }

// The tool list of a protocol prompt, parsed with its key order kept; nullopt when there is none.
std::optional<ojson> listed_tools(std::string_view text) {
  static constexpr std::string_view kToolBench = "you have access to the following APIs:";
  auto list_at = [](std::string_view s) -> std::optional<ojson> {
    auto v = parse_python_literal_ordered(s);
    if (v && v->is_array() && !v->empty() && std::all_of(v->begin(), v->end(), named_dict)) return v;
    return std::nullopt;
  };
  if (size_t m = text.find(kToolBench); m != std::string_view::npos) return list_at(text.substr(m + kToolBench.size()));
  for (size_t p = text.find("[{"); p != std::string_view::npos; p = text.find("[{", p + 1))
    if (auto v = list_at(text.substr(p))) return v;
  return std::nullopt;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// JSON Schema parameters of a listed API: ToolBench's object minus its "optional" list, or
// lagent's [{name, type, description?}] list as properties (types lower-cased: STRING -> string).
ojson parameters_of(const ojson& entry) {
  ojson out = ojson::object();
  auto p = entry.find("parameters");
  if (p != entry.end() && p->is_object()) {
    for (auto it = p->begin(); it != p->end(); ++it)
      if (it.key() != "optional") out[it.key()] = it.value();
    return out;
  }
  ojson props = ojson::object();
  if (p != entry.end() && p->is_array())
    for (const auto& q : *p) {
      if (!named_dict(q)) continue;
      ojson spec = ojson::object();
      for (auto it = q.begin(); it != q.end(); ++it)
        if (it.key() != "name") spec[it.key()] = it.key() == "type" && it->is_string() ? ojson(lower(it->get<std::string>())) : *it;
      props[q["name"].get<std::string>()] = std::move(spec);
    }
  out["type"] = "object";
  out["properties"] = std::move(props);
  if (auto r = entry.find("required"); r != entry.end() && r->is_array()) out["required"] = *r;
  return out;
}

ToolSpec tool_spec(const ojson& entry) {
  ojson fn = ojson::object();
  const std::string name = entry["name"].get<std::string>();
  fn["name"] = name;
  if (auto d = entry.find("description"); d != entry.end() && d->is_string()) fn["description"] = *d;
  fn["parameters"] = parameters_of(entry);
  ojson tool = ojson::object();
  tool["type"] = "function";
  tool["function"] = std::move(fn);
  return ToolSpec{name, tool.dump()};
}

bool offers(const std::vector<ToolSpec>& tools, std::string_view name) {
  return std::any_of(tools.begin(), tools.end(), [&](const ToolSpec& t) { return t.name == name; });
}

// An assistant ReAct call step as a structured call; its thought goes to `a.content` (or away).
void make_call(const ReactStep& step, const std::vector<ToolSpec>& tools, const NativeCallOptions& o, Turn& a,
               std::map<std::string, int64_t>& counts) {
  if (!step.tool_call) throw StaysText{"not_a_function_call"};
  if (!offers(tools, step.action)) throw StaysText{"unlisted_tool"};
  ojson args = step.arguments.empty() ? ojson::object() : ojson::parse(step.arguments, nullptr, false);
  if (!args.is_object()) throw StaysText{"arguments_not_object"};
  a.content = o.thought_with_call ? step.thought : std::string();
  if (!o.thought_with_call && !step.thought.empty()) ++counts["thoughts_dropped"];
  a.tool_calls = {ToolCall{step.action, args.dump(), {}}};
  ++counts["calls"];
}

// lagent's observation marker, announced by Agent-FLAN's protocol prompt.
constexpr std::string_view kResponse = "Response:";

Conversation convert(const Conversation& in, const NativeCallOptions& o, std::map<std::string, int64_t>& counts) {
  size_t sys = in.turns.size();
  std::optional<ojson> list;
  for (size_t i = 0; i < in.turns.size() && !list; ++i)
    if (in.turns[i].role == Role::System && (list = listed_tools(in.turns[i].content))) sys = i;
  if (!list) throw StaysText{"no_tool_list"};
  Conversation out = in;
  out.turns.clear();
  out.tools.clear();
  for (const auto& e : *list)
    if (e["name"] != "Finish") out.tools.push_back(tool_spec(e));
  std::string pending;  // the call whose result comes next
  bool react = false;
  for (size_t i = 0; i < in.turns.size(); ++i) {
    if (i == sys) continue;
    Turn t = in.turns[i];
    if (t.role == Role::Assistant) {
      pending.clear();
      const ReactParse r = parse_react(t.content);
      if (r.match == ReactMatch::Unparseable) throw StaysText{"unparseable_step"};
      if (r.match == ReactMatch::Parsed) {
        react = true;
        if (r.step.kind == StepKind::Answer) {
          t.content = r.step.answer;
          ++counts["answers"];
        } else {
          make_call(r.step, out.tools, o, t, counts);
          pending = r.step.action;
        }
      }
    } else if (t.role == Role::Tool || (t.role == Role::User && !pending.empty())) {
      if (pending.empty()) throw StaysText{"result_without_call"};
      if (t.role == Role::User) {
        std::string_view body = trim(t.content);
        if (!body.starts_with(kResponse)) throw StaysText{"user_turn_after_call"};
        t.content = std::string(trim(body.substr(kResponse.size())));
        t.role = Role::Tool;
      }
      t.name = pending;
      pending.clear();
      ++counts["tool_results"];
    }
    out.turns.push_back(std::move(t));
  }
  if (!react) throw StaysText{"no_react_steps"};
  return out;
}

}  // namespace

std::optional<NativeCallOptions> native_call_options(const std::string& chat_template) {
  const auto& able = tool_template_names();
  if (std::find(able.begin(), able.end(), chat_template) == able.end()) return std::nullopt;
  // Llama-3.1's published template prints only the call of a calling turn (and we refuse content
  // beside it rather than drop it), so the ReAct thought cannot go there.
  return NativeCallOptions{chat_template != "llama-3"};
}

void to_native_tool_calls(std::vector<Conversation>& conversations, const NativeCallOptions& options,
                          TransformReport& report) {
  for (auto& c : conversations) {
    report.add("conversations");
    // OpenAI records with `tools` / `tool_calls` come from the reader structured already.
    if (!c.tools.empty() || std::any_of(c.turns.begin(), c.turns.end(), [](const Turn& t) { return !t.tool_calls.empty(); })) {
      report.add("structured");
      continue;
    }
    std::map<std::string, int64_t> counts;
    try {
      c = convert(c, options, counts);
    } catch (const StaysText& e) {
      report.add(std::string("text.") + e.reason);
      if (std::string_view(e.reason) != "no_tool_list")
        report.note(fmt::format("{} ({} record {}): kept as text: {}", c.id, c.file, c.record, e.reason));
      continue;
    }
    report.add("native");
    for (const auto& [k, n] : counts) report.add(k, n);
  }
}

}  // namespace agenttune
