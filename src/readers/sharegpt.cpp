// ShareGPT in FastChat's layout: {id, conversations: [{from, value}]}, from = human|gpt, plus
// whatever raw dumps contain (system, chatgpt, bing, ...), which RolePolicy maps or drops.
// No per-turn loss: every assistant turn trains.
#include "reader_internal.h"

namespace agenttune::readers {

const Schema& sharegpt_schema() {
  static const Schema s{DatasetFormat::ShareGPT,
                        "conversations",
                        "from",
                        "value",
                        {{"human", Role::User}, {"gpt", Role::Assistant}, {"system", Role::System}},
                        nullptr};
  return s;
}

}  // namespace agenttune::readers
