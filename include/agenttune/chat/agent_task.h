#pragma once
// The task an agent record belongs to, which decides how its actions are scored (eval/) and how
// held-out records are stratified (data/heldout.h). It lives beside Conversation because both the
// SFT prepare (which writes held-out records) and eval (which scores them) need it, and eval sits
// above data.
#include <array>
#include <optional>
#include <string_view>
#include <utility>

#include "agenttune/config/scalars.h"

namespace agenttune {

// os, db, kg, alfworld, webshop, mind2web: AgentInstruct's six tasks (from the record id);
// toolbench: ToolBench/ToolLLaMA records; agentflan: Agent-FLAN files (and the negatives prepare
// generates); chat: general conversation without action syntax (ShareGPT, OpenAI messages).
enum class AgentTask { Os, Db, Kg, Alfworld, Webshop, Mind2web, ToolBench, AgentFlan, Chat };

template <>
struct EnumNames<AgentTask> {
  static constexpr std::array<std::pair<AgentTask, std::string_view>, 9> values = {
      {{AgentTask::Os, "os"},
       {AgentTask::Db, "db"},
       {AgentTask::Kg, "kg"},
       {AgentTask::Alfworld, "alfworld"},
       {AgentTask::Webshop, "webshop"},
       {AgentTask::Mind2web, "mind2web"},
       {AgentTask::ToolBench, "toolbench"},
       {AgentTask::AgentFlan, "agentflan"},
       {AgentTask::Chat, "chat"}}};
};

const char* task_name(AgentTask t);  // the table's name: "os", ..., "chat"
// Inverse of task_name; throws agenttune::Error listing the names (and the nearest) otherwise.
AgentTask task_from_name(std::string_view name);

// The AgentInstruct task an id names by its prefix before the first '_' ("os_12", "mind2web_3");
// nullopt when the prefix names none of the six.
std::optional<AgentTask> agentinstruct_task(std::string_view id);

namespace eval {
using agenttune::AgentTask;
using agenttune::task_from_name;
using agenttune::task_name;
}  // namespace eval

}  // namespace agenttune
