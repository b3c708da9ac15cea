// internlm/Agent-FLAN JSONL: {id, conversation (singular): [{role: system|user|assistant,
// content, loss}]}. As in xtuner's mapper, loss may also be the string "true"/"false"; an absent
// loss is left unset (assistant turns then train).
#include <fmt/format.h>

#include "reader_internal.h"

namespace agenttune::readers {

namespace {
std::optional<bool> agentflan_loss(const nlohmann::json& turn, const std::string& path,
                                   const Where& where) {
  auto it = turn.find("loss");
  if (it != turn.end() && it->is_string()) {
    const auto& v = it->get_ref<const std::string&>();
    if (v == "true" || v == "True") return true;
    if (v == "false" || v == "False") return false;
    record_issue(
        "bad_type",
        where.field_msg(path + ".loss",
                        fmt::format("expected true, false, \"true\" or \"false\", got \"{}\"", v)));
  }
  return read_bool_or_null(turn, "loss", path, where);
}
}  // namespace

const Schema& agentflan_schema() {
  static const Schema s{
      DatasetFormat::AgentFlan,
      "conversation",
      "role",
      "content",
      {{"system", Role::System}, {"user", Role::User}, {"assistant", Role::Assistant}},
      agentflan_loss,
      {}};
  return s;
}

}  // namespace agenttune::readers
