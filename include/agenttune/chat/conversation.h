#pragma once
// The one type every agent/chat dataset is read into, whatever its schema (AgentInstruct,
// ShareGPT, ToolBench, Agent-FLAN, OpenAI messages), and every template renders from.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace agenttune {

enum class Role { System, User, Assistant, Tool };

struct Turn {
  Role role = Role::User;
  std::string content;
  // Per-turn training flag from the data: nullopt = the dataset did not say (assistant turns then
  // train, others never do); false = never trained; true = trained (meaningful on assistant turns).
  std::optional<bool> loss;
  // Capability tag set by the Agent-FLAN decomposition (reasoning, retrieval, understanding,
  // instruction_following); empty when untagged.
  std::string capability;
};

struct Conversation {
  std::string id;
  std::string source;   // dataset name from the config, for counts and error messages
  std::vector<Turn> turns;
  // Where it came from, for messages: file and 0-based record index.
  std::string file;
  int64_t record = -1;
};

const char* role_name(Role r);  // "system", "user", "assistant", "tool"

// Whether a turn is trained under the rule above.
inline bool trains(const Turn& t) { return t.role == Role::Assistant && t.loss.value_or(true); }

}  // namespace agenttune
