#pragma once
// Readers: every supported chat/agent dataset schema (AgentInstruct, ShareGPT, ToolBench SFT,
// Agent-FLAN, OpenAI messages), as a JSON array file or JSON Lines, read into Conversations.
// Problems are either errors naming file, record (0-based) and field, or — where a policy says
// so — drops that are counted in a ReadReport. Nothing is dropped without a count.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agenttune/chat/conversation.h"
#include "agenttune/config/scalars.h"

namespace agenttune {

enum class DatasetFormat { Auto, AgentInstruct, ShareGPT, ToolBench, AgentFlan, OpenAI };

template <>
struct EnumNames<DatasetFormat> {
  static constexpr std::array<std::pair<DatasetFormat, std::string_view>, 6> values = {
      {{DatasetFormat::Auto, "auto"},
       {DatasetFormat::AgentInstruct, "agentinstruct"},
       {DatasetFormat::ShareGPT, "sharegpt"},
       {DatasetFormat::ToolBench, "toolbench"},
       {DatasetFormat::AgentFlan, "agentflan"},
       {DatasetFormat::OpenAI, "openai"}}};
};

// The format's name in the table above ("auto", "agentinstruct", ...).
const char* format_name(DatasetFormat f);
// Inverse of format_name; throws naming the valid names (and the nearest one) otherwise.
DatasetFormat parse_format(std::string_view name);

enum class OnProblem { Error, Drop };

template <>
struct EnumNames<OnProblem> {
  static constexpr std::array<std::pair<OnProblem, std::string_view>, 2> values = {
      {{OnProblem::Error, "error"}, {OnProblem::Drop, "drop"}}};
};

// What to do when user/assistant turns do not alternate (after leading system turns; tool
// results stand on the user side).
enum class Alternation {
  Error,  // throw naming the record and turn
  Merge,  // join consecutive same-role turns; a record still broken after that is dropped
  Drop,   // drop the record
};

template <>
struct EnumNames<Alternation> {
  static constexpr std::array<std::pair<Alternation, std::string_view>, 3> values = {
      {{Alternation::Error, "error"}, {Alternation::Merge, "merge"}, {Alternation::Drop, "drop"}}};
};

struct RolePolicy {
  // Role names accepted on top of each schema's own (matched case-insensitively). The defaults
  // cover what raw ShareGPT dumps contain besides human/gpt.
  std::map<std::string, Role, std::less<>> aliases = {
      {"chatgpt", Role::Assistant},   {"bing", Role::Assistant}, {"bard", Role::Assistant},
      {"assistant", Role::Assistant}, {"user", Role::User},      {"system", Role::System}};
  OnProblem unknown = OnProblem::Error;  // Drop removes just that turn
};

struct ReadPolicies {
  RolePolicy roles;
  Alternation alternation = Alternation::Error;
  // Wrong types, missing fields, malformed JSON Lines, empty or whitespace-only content,
  // invalid UTF-8, conversations without an assistant turn: error, or drop the record.
  OnProblem bad_record = OnProblem::Error;
  // FastChat's rule for ShareGPT: a conversation that opens (after system turns) with the
  // assistant loses that turn, e.g. a greeting.
  bool drop_leading_assistant = true;
  // toolllama_G123_dfs_train.json holds one record per step with the earlier steps as context;
  // ToolLLaMA trains only the record's last assistant turn, so earlier ones get loss=false.
  bool toolbench_last_assistant_only = true;
};

// The reader knobs worth a YAML key in an SFT config's datasets[].policies (role aliases keep the
// reader's defaults).
template <class V>
void visit(V& v, ReadPolicies& p) {
  v("alternation", p.alternation);
  v("bad_record", p.bad_record);
  v("unknown_roles", p.roles.unknown);
  v("drop_leading_assistant", p.drop_leading_assistant);
  v("toolbench_last_assistant_only", p.toolbench_last_assistant_only);
}

struct DatasetSpec {
  std::string name;                            // becomes Conversation::source
  std::vector<std::filesystem::path> paths;    // files, or folders of *.json / *.jsonl
  DatasetFormat format = DatasetFormat::Auto;  // Auto: decided per file from its first record
  ReadPolicies policies;
};

// Counts accumulate over every read_dataset call given the same report.
struct ReadReport {
  int64_t records = 0;                                       // records seen
  int64_t kept = 0;                                          // conversations returned
  std::map<std::string, int64_t> dropped_records;            // reason -> records
  std::map<std::string, int64_t> dropped_turns;              // reason -> turns
  std::map<std::string, int64_t> mapped_roles;               // "chatgpt -> assistant" -> turns
  int64_t merged_turns = 0;                                  // turns folded into their predecessor
  std::vector<std::pair<std::string, DatasetFormat>> files;  // each file and the format used
  std::vector<std::string> messages;  // the first `max_messages` problems, in full
  size_t max_messages = 8;

  void note(std::string message);  // keeps it if fewer than max_messages are kept
  std::string summary() const;
};

std::vector<Conversation> read_dataset(const DatasetSpec& spec, ReadReport& report);

// The format of one parsed record by its keys: `conversation` -> AgentFlan, `messages` -> OpenAI,
// `conversations` with a per-turn `loss` -> AgentInstruct, with a `function` turn or an id
// "Step N: ..." -> ToolBench, otherwise ShareGPT. Auto if none fits. The same marks refuse a
// record whose schema disagrees with the format it is read as (configured, or detected from the
// file's first record): an error naming the field and the format to use, whatever bad_record says,
// because the whole file is likely in that format.
DatasetFormat detect_format(const nlohmann::json& record);

}  // namespace agenttune
