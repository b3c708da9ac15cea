#pragma once
// Shared by the readers: where a record lives (for messages), record-level problems, the raw
// turn list a schema reader produces, and the per-schema tables.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agenttune/readers/dataset.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune::readers {

// File, 0-based record index and 1-based line of the record's start, rendered into messages as
// "FILE: record N (line L), field 'F': what".
struct Where {
  std::string file;
  int64_t record = 0;
  int64_t line = 0;

  std::string record_msg(std::string_view what) const;
  std::string field_msg(std::string_view field, std::string_view what) const;
};

// A problem confined to one record: fatal or a counted drop, as ReadPolicies::bad_record says.
struct RecordIssue : Error {
  RecordIssue(std::string reason_, const std::string& message)
      : Error(message), reason(std::move(reason_)) {}
  std::string reason;  // short key for ReadReport counts: bad_type, empty_content, ...
};

[[noreturn]] void record_issue(const char* reason, const std::string& message);

struct RawTurn {
  std::string role;   // as written in the file
  std::string field;  // path of its role field, e.g. conversations[3].from
  std::string content;
  std::optional<bool> loss;
  std::vector<ToolCall> tool_calls;  // OpenAI assistant turns' structured calls
  std::string name;                  // OpenAI tool turns: the function whose result this is
};

struct RawRecord {
  std::string id;  // empty when the record has none
  std::vector<RawTurn> turns;
  std::vector<ToolSpec> tools;  // OpenAI `tools`
};

using LossReader = std::optional<bool> (*)(const nlohmann::json& turn, const std::string& path,
                                           const Where& where);

// Another schema's mark in a record: read with the wrong `format`, such a record would train
// the wrong turns (AgentInstruct's loss=false scaffolding) or lose its structure without an error.
struct Telltale {
  DatasetFormat format;  // the schema the mark belongs to
  std::string field;     // where it is, e.g. conversations[1].loss
  std::string what;      // e.g. "per-turn `loss`"
};
using TelltaleFinder = std::optional<Telltale> (*)(const nlohmann::json& record);

struct Schema {
  DatasetFormat format;
  const char* turns_key;
  const char* role_key;
  const char* content_key;
  std::vector<std::pair<std::string, Role>> roles;  // the schema's own role names
  LossReader loss;                                  // nullptr: the schema has no loss flags
  // Marks of the schemas whose records share this one's keys but not its meaning.
  std::vector<TelltaleFinder> telltales;
};

const Schema& agentinstruct_schema();
const Schema& sharegpt_schema();
const Schema& toolbench_schema();
const Schema& agentflan_schema();
const Schema& openai_schema();
const Schema& schema_for(DatasetFormat f);

// AgentInstruct's mark: a turn of `conversations` with a `loss` key (every THUDM turn has one).
std::optional<Telltale> agentinstruct_telltale(const nlohmann::json& record);
// ToolBench's mark: a `from: function` turn (an API result) in `conversations`.
std::optional<Telltale> toolbench_telltale(const nlohmann::json& record);
// Index of the first turn object of record[turns_key] holding `key`, whose value, when `value`
// is given, is that string (case-insensitively, as roles are matched).
std::optional<size_t> find_turn(const nlohmann::json& record, const char* turns_key, const char* key,
                                std::optional<std::string_view> value = std::nullopt);
// Why `record` belongs to another schema than `schema`: it lacks the schema's turn list but has
// another's, or carries a mark in `schema.telltales`. Agrees with detect_format, so a file's
// first record never trips the format detected from it. nullopt when nothing points elsewhere.
std::optional<Telltale> find_telltale(const nlohmann::json& record, const Schema& schema);
// "AgentInstruct", "Agent-FLAN", ... for messages.
const char* schema_title(DatasetFormat f);

// Reads id and turns with type checks; throws RecordIssue naming the field.
RawRecord read_record(const nlohmann::json& record, const Schema& schema, const Where& where);

// Whether an OpenAI record carries structured tool fields (`tools`, or a turn with `tool_calls`,
// `name` or `tool_call_id`) that read_tool_fields must read.
bool has_tool_fields(const nlohmann::json& record);
// OpenAI's `tools` and each turn's `tool_calls` / `name` / `tool_call_id` into `out` (read by
// read_record already). `record` is the same record parsed with its key order kept: templates
// print tools and arguments with `tojson`, so a reordered object would render other ids. Throws
// RecordIssue naming the field for a malformed entry.
void read_tool_fields(const nlohmann::ordered_json& record, const Where& where, RawRecord& out);

// A bool/null/absent `key` of a turn; anything else is a bad_type issue.
std::optional<bool> read_bool_or_null(const nlohmann::json& turn, const char* key,
                                      const std::string& path, const Where& where);

// Roles, empty content, leading assistant turns, alternation. nullopt = dropped by policy (and
// counted in `report`); a bad record throws RecordIssue; a policy set to Error throws Error.
std::optional<Conversation> normalize(RawRecord raw, const Schema& schema,
                                      const ReadPolicies& policies, const Where& where,
                                      ReadReport& report);

// ToolLLaMA trains only the last assistant turn of each "Step N" record.
void train_last_assistant_only(Conversation& conversation);

// UTF-8 checks. Invalid bytes are replaced by U+FDD0, a noncharacter that real text does not
// carry, so the record can still be parsed and the offending field named.
inline constexpr std::string_view kBadUtf8Marker = "\xEF\xB7\x90";
size_t utf8_error_offset(std::string_view s);  // npos when valid
std::string replace_bad_utf8(std::string_view s);
// Path of the first string (or key) holding the marker, e.g. "conversations[2].value"; "" if none.
std::string find_marker(const nlohmann::json& value);

// The records of one file, JSON array or JSON Lines (decided by its first non-space byte).
// Each record's text is handed out unparsed, so one bad record cannot hide the others.
class RecordSource {
 public:
  explicit RecordSource(const std::filesystem::path& path);  // refuses parquet and non-JSON
  struct Item {
    int64_t index = 0;
    int64_t line = 0;
    std::string_view text;
  };
  bool next(Item& item);
  bool is_array() const { return array_; }

 private:
  std::string_view scan_array_element();
  std::filesystem::path path_;
  std::shared_ptr<MappedFile> map_;
  std::string_view text_;
  size_t pos_ = 0;
  int64_t line_ = 1;
  int64_t index_ = 0;
  bool array_ = false;
  bool done_ = false;
};

}  // namespace agenttune::readers
