#include "agenttune/data/heldout.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "agenttune/data/json_lines.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

namespace fs = std::filesystem;
using nlohmann::json;

AgentTask task_of(const Conversation& c, DatasetFormat format) {
  switch (format) {
    case DatasetFormat::AgentInstruct:
      if (auto t = agentinstruct_task(c.id)) return *t;
      fail("{} record {} (id '{}'): an AgentInstruct id names its task by its prefix (os_, db_, kg_, alfworld_, "
           "webshop_, mind2web_); this one names none, so it cannot be held out per task",
           c.file, c.record, c.id);
    case DatasetFormat::ToolBench:
      return AgentTask::ToolBench;
    case DatasetFormat::AgentFlan:
      return AgentTask::AgentFlan;
    case DatasetFormat::ShareGPT:
    case DatasetFormat::OpenAI:
      return AgentTask::Chat;
    case DatasetFormat::Auto:
      break;
  }
  fail("{} record {}: no task for a record whose format was not decided", c.file, c.record);
}

bool is_negative(const Conversation& c) {
  return c.id.find("negative") != std::string::npos ||
         fs::path(c.file).filename().string().find("negative") != std::string::npos;
}

namespace {

// Tool definitions and call arguments travel as the exact text the reader kept (templates print
// them in that key order and spelling; a re-serialised object could render other ids).
json call_json(const ToolCall& c) {
  json j = {{"name", c.name}, {"arguments", c.arguments}};
  if (!c.id.empty()) j["id"] = c.id;
  return j;
}

json turn_json(const Turn& t) {
  json j = {{"role", role_name(t.role)}, {"content", t.content}};
  j["loss"] = t.loss ? json(*t.loss) : json(nullptr);
  if (!t.capability.empty()) j["capability"] = t.capability;
  if (!t.tool_calls.empty()) {
    j["tool_calls"] = json::array();
    for (const auto& c : t.tool_calls) j["tool_calls"].push_back(call_json(c));
  }
  if (!t.name.empty()) j["name"] = t.name;
  return j;
}

json record_json(const HeldOutRecord& r) {
  json turns = json::array();
  for (const auto& t : r.conv.turns) turns.push_back(turn_json(t));
  json j = {{"id", r.conv.id},        {"source", r.conv.source}, {"task", task_name(r.task)},
            {"negative", r.negative}, {"file", r.conv.file},     {"record", r.conv.record},
            {"turns", std::move(turns)}};
  if (!r.conv.tools.empty()) {
    j["tools"] = json::array();
    for (const auto& t : r.conv.tools) j["tools"].push_back({{"name", t.name}, {"json", t.json}});
  }
  return j;
}

Role role_from(std::string_view name) {
  for (Role r : {Role::System, Role::User, Role::Assistant, Role::Tool})
    if (name == role_name(r)) return r;
  fail("role '{}' is not one of system, user, assistant, tool", name);
}

// The field `key` of `j` as T; an error naming it and the type expected otherwise.
template <class T>
T field(const json& j, const char* key, const char* expected) {
  auto it = j.find(key);
  if (it == j.end()) fail("field '{}' is missing", key);
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail("field '{}' must be {}, got {}", key, expected, it->dump());
  }
}

// The objects of the optional array `key` of `j` (absent = none), each read by `one`.
template <class T, class One>
std::vector<T> objects(const json& j, const char* key, One&& one) {
  std::vector<T> out;
  auto it = j.find(key);
  if (it == j.end()) return out;
  if (!it->is_array()) fail("field '{}' must be an array of objects, got {}", key, it->dump());
  for (const auto& e : *it) {
    if (!e.is_object()) fail("field '{}' must be an array of objects, got an entry {}", key, e.dump());
    out.push_back(one(e));
  }
  return out;
}

Turn turn_from(const json& j) {
  if (!j.is_object()) fail("a turn must be an object, got {}", j.dump());
  Turn t;
  t.role = role_from(field<std::string>(j, "role", "a string"));
  t.content = field<std::string>(j, "content", "a string");
  if (auto it = j.find("loss"); it != j.end() && !it->is_null()) t.loss = field<bool>(j, "loss", "null or a boolean");
  if (j.contains("capability")) t.capability = field<std::string>(j, "capability", "a string");
  t.tool_calls = objects<ToolCall>(j, "tool_calls", [](const json& c) {
    return ToolCall{field<std::string>(c, "name", "a string"), field<std::string>(c, "arguments", "a string"),
                    c.contains("id") ? field<std::string>(c, "id", "a string") : ""};
  });
  if (j.contains("name")) t.name = field<std::string>(j, "name", "a string");
  return t;
}

HeldOutRecord record_from(const json& j) {
  if (!j.is_object()) fail("a record must be a JSON object");
  HeldOutRecord r;
  r.conv.id = field<std::string>(j, "id", "a string");
  r.conv.source = field<std::string>(j, "source", "a string");
  r.task = task_from_name(field<std::string>(j, "task", "a string"));
  r.negative = field<bool>(j, "negative", "a boolean");
  r.conv.file = field<std::string>(j, "file", "a string");
  r.conv.record = field<int64_t>(j, "record", "an integer");
  auto turns = j.find("turns");
  if (turns == j.end() || !turns->is_array() || turns->empty()) fail("field 'turns' must be a non-empty array");
  for (const auto& t : *turns) r.conv.turns.push_back(turn_from(t));
  r.conv.tools = objects<ToolSpec>(j, "tools", [](const json& t) {
    return ToolSpec{field<std::string>(t, "name", "a string"), field<std::string>(t, "json", "a string")};
  });
  return r;
}

}  // namespace

void write_heldout(const fs::path& file, const std::vector<HeldOutRecord>& records) {
  std::string text;
  for (const auto& r : records) text += record_json(r).dump() + "\n";
  write_file_atomic(file, text);
}

std::vector<HeldOutRecord> read_heldout(const fs::path& path) {
  const fs::path file = fs::is_directory(path) ? path / kHeldOutFile : path;
  if (!fs::exists(file))
    fail("{}: no held-out records here (set datasets[].holdout in the SFT prepare config to write them)",
         file.string());
  std::vector<HeldOutRecord> out;
  for_each_json_line(file, [&](const json& j) { out.push_back(record_from(j)); });
  return out;
}

}  // namespace agenttune
