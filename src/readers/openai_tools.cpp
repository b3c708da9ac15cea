// OpenAI messages' structured tool fields: record `tools` [{type: function, function: {name, ...}}],
// assistant `tool_calls` [{id?, type: function, function: {name, arguments}}] (arguments a JSON
// object, or its text as the API sends it), tool turns' `name` / `tool_call_id`. Kept structured
// (Conversation::tools, Turn::tool_calls, Turn::name) for the templates that render them.
#include <fmt/format.h>

#include "reader_internal.h"

namespace agenttune::readers {

namespace {

using ojson = nlohmann::ordered_json;

const ojson* string_member(const ojson& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() && !it->get_ref<const std::string&>().empty() ? &*it : nullptr;
}

// The `function` object of a tools entry or a call, with a non-empty string name; `expected`
// describes the entry for the message.
const ojson& function_of(const ojson& entry, const std::string& path, const Where& where, const char* expected) {
  const ojson* fn = nullptr;
  if (entry.is_object())
    if (auto it = entry.find("function"); it != entry.end() && it->is_object()) fn = &*it;
  if (!fn || !string_member(*fn, "name")) record_issue("bad_type", where.field_msg(path, expected));
  return *fn;
}

ToolSpec read_tool(const ojson& entry, const std::string& path, const Where& where) {
  const ojson& fn = function_of(entry, path, where,
                                "expected {\"type\": \"function\", \"function\": {\"name\": <non-empty string>, ...}}");
  return ToolSpec{fn["name"].get<std::string>(), entry.dump()};
}

ToolCall read_call(const ojson& call, const std::string& path, const Where& where) {
  const ojson& fn = function_of(call, path, where,
                                "expected {\"function\": {\"name\": <non-empty string>, \"arguments\": <object or "
                                "its JSON text>}}");
  ojson args = ojson::object();
  if (auto a = fn.find("arguments"); a != fn.end() && !a->is_null()) {
    args = a->is_string() ? ojson::parse(a->get_ref<const std::string&>(), nullptr, false) : *a;
    if (!args.is_object())
      record_issue("bad_type", where.field_msg(path + ".function.arguments",
                                               fmt::format("expected a JSON object (or its text), got {}", a->dump())));
  }
  std::string id;
  if (const ojson* i = string_member(call, "id")) id = i->get<std::string>();
  return ToolCall{fn["name"].get<std::string>(), args.dump(), id};
}

// A tool turn's function: its `name`, else the call its `tool_call_id` answers.
std::string tool_name(const ojson& turn, const RawRecord& out, const std::string& path, const Where& where) {
  if (const ojson* n = string_member(turn, "name")) return n->get<std::string>();
  const ojson* id = string_member(turn, "tool_call_id");
  if (!id) return {};
  for (const auto& t : out.turns)
    for (const auto& c : t.tool_calls)
      if (c.id == id->get_ref<const std::string&>()) return c.name;
  record_issue("bad_type", where.field_msg(path + ".tool_call_id",
                                           fmt::format("no earlier tool call has id {}", id->dump())));
}

}  // namespace

bool has_tool_fields(const nlohmann::json& record) {
  if (record.contains("tools")) return true;
  auto turns = record.find("messages");
  if (turns == record.end() || !turns->is_array()) return false;
  for (const auto& t : *turns)
    if (t.is_object() && (t.contains("tool_calls") || t.contains("name") || t.contains("tool_call_id"))) return true;
  return false;
}

void read_tool_fields(const ojson& record, const Where& where, RawRecord& out) {
  if (auto tools = record.find("tools"); tools != record.end() && !tools->is_null()) {
    if (!tools->is_array())
      record_issue("bad_type", where.field_msg("tools", fmt::format("expected an array, got {}", tools->type_name())));
    for (size_t i = 0; i < tools->size(); ++i)
      out.tools.push_back(read_tool((*tools)[i], fmt::format("tools[{}]", i), where));
  }
  const ojson& turns = record.at("messages");  // read_record checked it is an array of objects
  for (size_t i = 0; i < turns.size(); ++i) {
    const ojson& t = turns[i];
    const std::string path = fmt::format("messages[{}]", i);
    RawTurn& turn = out.turns[i];
    if (auto calls = t.find("tool_calls"); calls != t.end() && !calls->is_null()) {
      if (!calls->is_array())
        record_issue("bad_type", where.field_msg(path + ".tool_calls",
                                                 fmt::format("expected an array, got {}", calls->type_name())));
      for (size_t k = 0; k < calls->size(); ++k)
        turn.tool_calls.push_back(read_call((*calls)[k], fmt::format("{}.tool_calls[{}]", path, k), where));
    }
    if (t.contains("tool_calls") && turn.tool_calls.empty() && !t.value("content", ojson()).is_string())
      record_issue("bad_type", where.field_msg(path + ".content", "null, and tool_calls is empty"));
    if (!turn.tool_calls.empty() && turn.role != "assistant")
      record_issue("bad_type", where.field_msg(path + ".tool_calls", fmt::format("on a '{}' turn; only assistant "
                                                                                 "turns make calls", turn.role)));
    // OpenAI's `name` on user/assistant turns names a participant, not a function.
    if (turn.role == "tool") turn.name = tool_name(t, out, path, where);
  }
}

}  // namespace agenttune::readers
