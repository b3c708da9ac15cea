// THUDM/AgentInstruct rows: {id, conversations: [{from: human|gpt, value, loss: true|false|null}]}.
// Scaffolding gpt turns (the "Ok." after the protocol prompt, one-shot example replies) carry
// loss=false; human turns carry null. A missing loss trains as usual, so plain ShareGPT reads
// the same here; ToolBench's function turns do not (they are refused, naming format: toolbench).
#include <fmt/format.h>

#include "reader_internal.h"

namespace agenttune::readers {

namespace {
std::optional<bool> agentinstruct_loss(const nlohmann::json& turn, const std::string& path,
                                       const Where& where) {
  return read_bool_or_null(turn, "loss", path, where);
}
}  // namespace

std::optional<Telltale> agentinstruct_telltale(const nlohmann::json& record) {
  auto i = find_turn(record, "conversations", "loss");
  if (!i) return std::nullopt;
  return Telltale{DatasetFormat::AgentInstruct, fmt::format("conversations[{}].loss", *i),
                  "per-turn `loss`"};
}

const Schema& agentinstruct_schema() {
  static const Schema s{DatasetFormat::AgentInstruct,
                        "conversations",
                        "from",
                        "value",
                        {{"human", Role::User}, {"gpt", Role::Assistant}},
                        agentinstruct_loss,
                        {toolbench_telltale}};
  return s;
}

}  // namespace agenttune::readers
