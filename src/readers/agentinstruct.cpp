// THUDM/AgentInstruct rows: {id, conversations: [{from: human|gpt, value, loss: true|false|null}]}.
// Scaffolding gpt turns (the "Ok." after the protocol prompt, one-shot example replies) carry
// loss=false; human turns carry null.
#include "reader_internal.h"

namespace agenttune::readers {

namespace {
std::optional<bool> agentinstruct_loss(const nlohmann::json& turn, const std::string& path,
                                       const Where& where) {
  return read_bool_or_null(turn, "loss", path, where);
}
}  // namespace

const Schema& agentinstruct_schema() {
  static const Schema s{DatasetFormat::AgentInstruct,
                        "conversations",
                        "from",
                        "value",
                        {{"human", Role::User}, {"gpt", Role::Assistant}},
                        agentinstruct_loss};
  return s;
}

}  // namespace agenttune::readers
