#pragma once
// The one type every agent/chat dataset is read into, whatever its schema (AgentInstruct,
// ShareGPT, ToolBench, Agent-FLAN, OpenAI messages), and every template renders from.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace agenttune {

enum class Role { System, User, Assistant, Tool };

// A function a conversation offers (one entry of OpenAI's / transformers' `tools` list: {"type":
// "function", "function": {"name", "description", "parameters"}}), kept as JSON text in the data's
// own key order: templates print it with `tojson`, and a reordered object would render other ids.
struct ToolSpec {
  std::string name;
  std::string json;
};

// A structured call in an assistant turn (transformers' `tool_calls[].function`); `arguments` is a
// JSON object as text, key order kept for the same reason.
struct ToolCall {
  std::string name;
  std::string arguments;
  std::string id;  // the data's call id, when it has one (OpenAI's tool_call_id); empty otherwise
};

struct Turn {
  Role role = Role::User;
  std::string content;
  // Per-turn training flag from the data: nullopt = the dataset did not say (assistant turns then
  // train, others never do); false = never trained; true = trained (meaningful on assistant turns).
  std::optional<bool> loss;
  // Capability tag set by the Agent-FLAN decomposition (reasoning, retrieval, understanding,
  // instruction_following); empty when untagged.
  std::string capability;
  // Assistant turns: calls made in the family's native form (templates that know tools render
  // them; the others refuse a turn that has any). Empty for text-only calls (ReAct's "Action:").
  std::vector<ToolCall> tool_calls;
  // Tool turns: the function whose result this is, when the data says.
  std::string name;
};

struct Conversation {
  std::string id;
  std::string source;   // dataset name from the config, for counts and error messages
  std::vector<Turn> turns;
  // Functions offered to the model (rendered by the templates that know tools: llama-3, qwen2.5,
  // qwen3); empty when the tools, if any, are described in a system prompt's text.
  std::vector<ToolSpec> tools;
  // Where it came from, for messages: file and 0-based record index.
  std::string file;
  int64_t record = -1;
};

const char* role_name(Role r);  // "system", "user", "assistant", "tool"

// Whether a turn is trained under the rule above.
inline bool trains(const Turn& t) { return t.role == Role::Assistant && t.loss.value_or(true); }

}  // namespace agenttune
