#include "agenttune/chat/agent_task.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string>
#include <vector>

#include "agenttune/util/error.h"
#include "agenttune/util/strings.h"

namespace agenttune {

const char* task_name(AgentTask t) {
  for (const auto& [v, name] : EnumNames<AgentTask>::values)
    if (v == t) return name.data();  // the table's literals are NUL-terminated
  return "?";
}

AgentTask task_from_name(std::string_view name) {
  if (auto t = parse_enum<AgentTask>(name)) return *t;
  std::vector<std::string> names;
  for (const auto& [v, n] : EnumNames<AgentTask>::values) names.emplace_back(n);
  auto near = nearest(name, names);
  fail("unknown agent task '{}'{} (valid: {})", name, near.empty() ? "" : fmt::format(", did you mean '{}'?", near),
       fmt::join(names, ", "));
}

std::optional<AgentTask> agentinstruct_task(std::string_view id) {
  const auto prefix = id.substr(0, id.find('_'));
  for (AgentTask t : {AgentTask::Os, AgentTask::Db, AgentTask::Kg, AgentTask::Alfworld, AgentTask::Webshop,
                      AgentTask::Mind2web})
    if (prefix == task_name(t)) return t;
  return std::nullopt;
}

}  // namespace agenttune
