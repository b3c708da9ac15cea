// The part every schema shares: a record is an object with an optional id and an array of turn
// objects, each with a role name, a string content and maybe a loss flag; only the key names and
// the loss syntax differ (see the Schema tables in the per-format files).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "reader_internal.h"

namespace agenttune::readers {

std::string Where::record_msg(std::string_view what) const {
  return line > 0 ? fmt::format("{}: record {} (line {}): {}", file, record, line, what)
                  : fmt::format("{}: record {}: {}", file, record, what);
}

std::string Where::field_msg(std::string_view field, std::string_view what) const {
  return record_msg(fmt::format("field '{}': {}", field, what));
}

void record_issue(const char* reason, const std::string& message) {
  throw RecordIssue(reason, message);
}

std::optional<bool> read_bool_or_null(const nlohmann::json& turn, const char* key,
                                      const std::string& path, const Where& where) {
  auto it = turn.find(key);
  if (it == turn.end() || it->is_null()) return std::nullopt;
  if (it->is_boolean()) return it->get<bool>();
  record_issue("bad_type", where.field_msg(path + "." + key,
                                           fmt::format("expected true, false or null, got {} {}",
                                                       it->type_name(), it->dump())));
}

const Schema& schema_for(DatasetFormat f) {
  switch (f) {
    case DatasetFormat::AgentInstruct:
      return agentinstruct_schema();
    case DatasetFormat::ShareGPT:
      return sharegpt_schema();
    case DatasetFormat::ToolBench:
      return toolbench_schema();
    case DatasetFormat::AgentFlan:
      return agentflan_schema();
    case DatasetFormat::OpenAI:
      return openai_schema();
    case DatasetFormat::Auto:
      break;
  }
  fail("internal: no schema for format '{}'", format_name(f));
}

RawRecord read_record(const nlohmann::json& rec, const Schema& s, const Where& where) {
  if (!rec.is_object())
    record_issue("bad_type",
                 where.record_msg(fmt::format("expected a JSON object, got {}", rec.type_name())));
  RawRecord out;
  if (auto id = rec.find("id"); id != rec.end()) {
    if (id->is_string()) {
      out.id = id->get<std::string>();
    } else if (id->is_number()) {
      out.id = id->dump();
    } else if (!id->is_null()) {
      record_issue("bad_type", where.field_msg("id", fmt::format("expected a string, got {}",
                                                                 id->type_name())));
    }
  }
  auto turns = rec.find(s.turns_key);
  if (turns == rec.end()) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : rec.items()) keys.push_back(k);
    record_issue(
        "missing_field",
        where.field_msg(s.turns_key,
                        fmt::format("missing ({} records have '{}'; this one has: {})",
                                    format_name(s.format), s.turns_key, fmt::join(keys, ", "))));
  }
  if (!turns->is_array())
    record_issue("bad_type",
                 where.field_msg(s.turns_key, fmt::format("expected an array of turns, got {}",
                                                          turns->type_name())));
  if (turns->empty()) record_issue("empty_conversation", where.field_msg(s.turns_key, "no turns"));
  for (size_t i = 0; i < turns->size(); ++i) {
    const auto& t = (*turns)[i];
    std::string path = fmt::format("{}[{}]", s.turns_key, i);
    if (!t.is_object())
      record_issue("bad_type",
                   where.field_msg(path, fmt::format("expected an object, got {}", t.type_name())));
    RawTurn turn;
    turn.field = path + "." + s.role_key;
    auto role = t.find(s.role_key);
    if (role == t.end()) record_issue("missing_field", where.field_msg(turn.field, "missing"));
    if (!role->is_string())
      record_issue("bad_type", where.field_msg(turn.field, fmt::format("expected a string, got {}",
                                                                       role->type_name())));
    turn.role = role->get<std::string>();
    std::string content_path = path + "." + s.content_key;
    auto content = t.find(s.content_key);
    // OpenAI tool-call messages carry `tool_calls` and a null or absent content
    // (read_tool_fields reads the calls and refuses a turn left with neither).
    const bool call_turn = s.format == DatasetFormat::OpenAI && t.contains("tool_calls");
    if (content == t.end() || content->is_null()) {
      if (!call_turn)
        record_issue(content == t.end() ? "missing_field" : "bad_type",
                     where.field_msg(content_path, content == t.end() ? "missing" : "expected a string, got null"));
    } else if (!content->is_string()) {
      record_issue("bad_type",
                   where.field_msg(content_path, fmt::format("expected a string, got {}", content->type_name())));
    } else {
      turn.content = content->get<std::string>();
    }
    if (s.loss) turn.loss = s.loss(t, path, where);
    out.turns.push_back(std::move(turn));
  }
  return out;
}

}  // namespace agenttune::readers
