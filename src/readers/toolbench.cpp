// ToolBench SFT (toolllama_G123_dfs_train.json): [{id: "Step N: <query>", conversations:
// [{from: system|user|function|assistant, value}]}]. Function results become Tool turns; the
// assistant values are the Thought/Action/Action Input blocks, kept verbatim. ToolBench has no
// loss flags: AgentInstruct's per-turn `loss` here is refused rather than ignored.
#include <fmt/format.h>

#include "reader_internal.h"

namespace agenttune::readers {

const Schema& toolbench_schema() {
  static const Schema s{DatasetFormat::ToolBench,
                        "conversations",
                        "from",
                        "value",
                        {{"system", Role::System},
                         {"user", Role::User},
                         {"function", Role::Tool},
                         {"assistant", Role::Assistant}},
                        nullptr,
                        {agentinstruct_telltale}};
  return s;
}

std::optional<Telltale> toolbench_telltale(const nlohmann::json& record) {
  auto i = find_turn(record, "conversations", "from", "function");
  if (!i) return std::nullopt;
  return Telltale{DatasetFormat::ToolBench, fmt::format("conversations[{}].from", *i),
                  "a `from: function` turn"};
}

// Each record repeats the earlier steps of its trajectory as context; training them again in
// every later step would weight early steps by the trajectory length.
void train_last_assistant_only(Conversation& c) {
  bool last = true;
  for (auto it = c.turns.rbegin(); it != c.turns.rend(); ++it) {
    if (it->role != Role::Assistant) continue;
    it->loss = last;
    last = false;
  }
}

}  // namespace agenttune::readers
