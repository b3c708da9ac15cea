// ShareGPT in FastChat's layout: {id, conversations: [{from, value}]}, from = human|gpt, plus
// whatever raw dumps contain (system, chatgpt, bing, ...), which RolePolicy maps or drops.
// No per-turn loss: every assistant turn trains, so AgentInstruct's `loss` and ToolBench's
// function turns are refused (they would train AgentInstruct's "Ok." or lose the tool role).
#include "reader_internal.h"

namespace agenttune::readers {

const Schema& sharegpt_schema() {
  static const Schema s{DatasetFormat::ShareGPT,
                        "conversations",
                        "from",
                        "value",
                        {{"human", Role::User}, {"gpt", Role::Assistant}, {"system", Role::System}},
                        nullptr,
                        {agentinstruct_telltale, toolbench_telltale}};
  return s;
}

}  // namespace agenttune::readers
