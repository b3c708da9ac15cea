// Records read with another schema's `format`: the schemas share key names (ShareGPT,
// AgentInstruct and ToolBench all use conversations/from/value), so a wrong choice often parses
// and trains the wrong turns. Each schema lists the marks it must not carry; the marks are the
// ones detect_format decides by, so `format: auto` and an explicit format agree.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "reader_internal.h"

namespace agenttune::readers {

namespace {

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

}  // namespace

std::optional<size_t> find_turn(const nlohmann::json& record, const char* turns_key, const char* key,
                                std::optional<std::string_view> value) {
  if (!record.is_object()) return std::nullopt;
  auto turns = record.find(turns_key);
  if (turns == record.end() || !turns->is_array()) return std::nullopt;
  for (size_t i = 0; i < turns->size(); ++i) {
    const auto& t = (*turns)[i];
    if (!t.is_object()) continue;
    auto it = t.find(key);
    if (it == t.end()) continue;
    if (!value || (it->is_string() && same_name(it->get_ref<const std::string&>(), *value))) return i;
  }
  return std::nullopt;
}

std::optional<Telltale> find_telltale(const nlohmann::json& record, const Schema& schema) {
  const DatasetFormat detected = detect_format(record);
  if (detected == DatasetFormat::Auto || detected == schema.format) return std::nullopt;
  if (!record.contains(schema.turns_key)) {
    const char* key = schema_for(detected).turns_key;
    return Telltale{detected, key, fmt::format("`{}` instead of `{}`", key, schema.turns_key)};
  }
  for (auto mark : schema.telltales)
    if (auto t = mark(record); t && t->format == detected) return t;
  return std::nullopt;
}

const char* schema_title(DatasetFormat f) {
  switch (f) {
    case DatasetFormat::AgentInstruct:
      return "AgentInstruct";
    case DatasetFormat::ShareGPT:
      return "ShareGPT";
    case DatasetFormat::ToolBench:
      return "ToolBench";
    case DatasetFormat::AgentFlan:
      return "Agent-FLAN";
    case DatasetFormat::OpenAI:
      return "OpenAI messages";
    case DatasetFormat::Auto:
      break;
  }
  return "an unknown schema";
}

}  // namespace agenttune::readers
