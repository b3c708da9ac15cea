// The tools a conversation offers and the argument checks against their schemas: its structured
// tools (Conversation::tools) when it has any, else three prompt forms are read: ToolBench's "you
// have access to the following APIs: [...]" and Agent-FLAN's bare "[{'name': ...}]" (both Python
// reprs), and the "- name: description" lines our transforms write (no parameters listed there,
// so only the name is checked).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "action_internal.h"
#include "agenttune/transforms/tool_list.h"

namespace agenttune::eval::action_detail {
namespace {

using nlohmann::json;

std::vector<std::string> string_list(const json& j) {
  std::vector<std::string> out;
  if (j.is_array())
    for (const auto& e : j)
      if (e.is_string()) out.push_back(e.get<std::string>());
  return out;
}

void add_parameter(ToolSchema& t, const std::string& key, const json& spec) {
  t.allowed->insert(key);
  if (!spec.is_object()) return;
  if (auto ty = spec.find("type"); ty != spec.end() && ty->is_string()) t.types[key] = lower(ty->get<std::string>());
  if (auto en = spec.find("enum"); en != spec.end() && en->is_array()) t.enums[key] = *en;
}

// ToolBench: parameters {properties, required, optional}; Agent-FLAN (lagent): parameters as a
// list of {name, type}, `required` beside it.
std::optional<ToolSchema> schema_of(const json& entry) {
  if (!entry.is_object()) return std::nullopt;
  auto name = entry.find("name");
  if (name == entry.end() || !name->is_string() || name->get<std::string>().empty()) return std::nullopt;
  ToolSchema t{name->get<std::string>(), string_list(entry.value("required", json())), {}, {}, {}};
  auto params = entry.find("parameters");
  if (params == entry.end()) return t;
  t.allowed.emplace();
  if (params->is_array()) {
    for (const auto& p : *params)
      if (p.is_object() && p.contains("name") && p["name"].is_string()) add_parameter(t, p["name"].get<std::string>(), p);
  } else if (params->is_object()) {
    if (auto props = params->find("properties"); props != params->end() && props->is_object())
      for (auto it = props->begin(); it != props->end(); ++it) add_parameter(t, it.key(), it.value());
    for (const auto& k : string_list(params->value("required", json()))) t.required.push_back(k);
    for (const auto& k : string_list(params->value("optional", json()))) t.allowed->insert(k);
  }
  for (const auto& k : t.required) t.allowed->insert(k);
  return t;
}

std::vector<ToolSchema> literal_list(std::string_view text) {
  std::vector<ToolSchema> out;
  auto list = parse_python_literal(text);
  if (list && list->is_array())
    for (const auto& e : *list)
      if (auto t = schema_of(e)) out.push_back(std::move(*t));
  return out;
}

std::vector<ToolSchema> tools_in(std::string_view text, bool dash_lines) {
  static constexpr std::string_view kToolBench = "you have access to the following APIs:";
  if (size_t m = text.find(kToolBench); m != std::string_view::npos) {
    auto tools = literal_list(text.substr(m + kToolBench.size()));
    if (!tools.empty()) return tools;
    for (auto& spec : parse_toolbench_tools(text).tools) tools.push_back(ToolSchema{spec.name, {}, {}, {}, {}});
    return tools;
  }
  for (size_t p = text.find("[{"); p != std::string_view::npos; p = text.find("[{", p + 1))
    if (auto tools = literal_list(text.substr(p)); !tools.empty()) return tools;
  std::vector<ToolSchema> tools;
  if (!dash_lines) return tools;
  for (std::string_view line : lines_of(text)) {
    line = trim(line);
    if (!line.starts_with("- ")) continue;
    std::string_view name = trim(line.substr(2, line.find(':') == std::string_view::npos ? std::string_view::npos
                                                                                         : line.find(':') - 2));
    if (is_identifier(name)) tools.push_back(ToolSchema{std::string(name), {}, {}, {}, {}});
  }
  return tools;
}

bool type_fits(const json& v, const std::string& type) {
  if (type == "string") return v.is_string();
  if (type == "integer")
    return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
  if (type == "number" || type == "float" || type == "double") return v.is_number();
  if (type == "boolean" || type == "bool") return v.is_boolean();
  if (type == "array" || type == "list") return v.is_array();
  if (type == "object" || type == "dict") return v.is_object();
  return true;  // a type the prompt names but JSON cannot check
}

}  // namespace

const ToolSchema* Offered::find(std::string_view name) const {
  for (const auto& t : tools)
    if (t.name == name) return &t;
  return nullptr;
}

std::string protocol_text(const Conversation& history) {
  std::string out;
  for (const Turn& t : history.turns) {
    if (t.role == Role::Assistant || t.role == Role::Tool) break;
    out += t.content;
    out += '\n';
    if (t.role == Role::User) break;
  }
  return out;
}

std::string_view last_observation(const Conversation& history) {
  for (auto it = history.turns.rbegin(); it != history.turns.rend(); ++it)
    if (it->role == Role::User || it->role == Role::Tool) return it->content;
  return {};
}

namespace {
// Conversation::tools entries: {"type": "function", "function": {name, description, parameters}}.
std::vector<ToolSchema> structured_tools(const std::vector<ToolSpec>& specs) {
  std::vector<ToolSchema> out;
  for (const auto& spec : specs) {
    auto entry = parse_json(spec.json);
    if (!entry || !entry->is_object() || !entry->contains("function")) continue;
    if (auto t = schema_of((*entry)["function"])) out.push_back(std::move(*t));
  }
  return out;
}
}  // namespace

Offered offered_tools(const Conversation& history) {
  if (!history.tools.empty()) return {structured_tools(history.tools)};
  // System turns first (ToolBench, Agent-FLAN, our transforms), then the first user turn.
  for (const Turn& t : history.turns)
    if (t.role == Role::System)
      if (auto tools = tools_in(t.content, /*dash_lines=*/true); !tools.empty()) return {std::move(tools)};
  for (const Turn& t : history.turns)
    if (t.role == Role::User) return {tools_in(t.content, /*dash_lines=*/false)};
  return {};
}

void check_arguments(const json& args, const ToolSchema* schema, Step& step) {
  step.args_valid = false;
  if (!args.is_object()) return step.fail("the arguments are not a JSON object");
  if (schema) {
    for (const auto& k : schema->required)
      if (!args.contains(k)) return step.fail(fmt::format("required argument '{}' of {} is missing", k, schema->name));
    for (auto it = args.begin(); it != args.end(); ++it) {
      if (schema->allowed && !schema->allowed->count(it.key()))
        return step.fail(fmt::format("{} has no parameter '{}'", schema->name, it.key()));
      if (auto ty = schema->types.find(it.key()); ty != schema->types.end() && !type_fits(it.value(), ty->second))
        return step.fail(fmt::format("argument '{}' is not of type {}", it.key(), ty->second));
      if (auto en = schema->enums.find(it.key()); en != schema->enums.end() &&
          std::find(en->second.begin(), en->second.end(), it.value()) == en->second.end())
        return step.fail(fmt::format("argument '{}' = {} is not one of {}", it.key(), it.value().dump(), en->second.dump()));
    }
  }
  step.args_valid = true;
}

}  // namespace agenttune::eval::action_detail
