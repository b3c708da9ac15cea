#pragma once
// Held-out loss: the mean next-token cross-entropy over the trained tokens (the chat template's
// loss mask) of held-out records (data/heldout.h), per source (dataset), per task and, as
// Agent-FLAN splits its learning curves, per capability: reasoning (thoughts), retrieval (which
// tool or action), understanding (its arguments), plus instruction_following and untagged.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/chat/template.h"
#include "agenttune/data/heldout.h"
#include "agenttune/eval/eval_model.h"
#include "agenttune/transforms/transform_config.h"

namespace agenttune::eval {

struct LossTally {
  int64_t records = 0;
  int64_t tokens = 0;     // trained tokens scored
  double loss_sum = 0;    // nats, summed over those tokens
  double mean() const { return tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0; }
};

struct HeldOutLoss {
  LossTally total;
  std::map<std::string, LossTally> by_source;      // Conversation::source
  std::map<std::string, LossTally> by_task;        // task_name()
  std::map<std::string, LossTally> by_capability;  // the turn's tag; "untagged" for none
  int64_t tokens_cut = 0;  // trained tokens past max_seq_len, not scored
};

struct HeldOutLossOptions {
  int64_t batch_size = 8;   // sequences per forward
  int64_t max_seq_len = 0;  // a longer rendering is cut there; 0 = the model's max_position_embeddings
  // Capabilities come from the turns' tags. Records in ReAct form carry none: with `align`, each
  // record is also decomposed by the Agent-FLAN chat alignment (transforms.h align_to_chat, every
  // parseable conversation rewritten: keep_react_fraction is taken as 0) and by_capability is
  // measured on that form; total, by_source and by_task stay on the records as given.
  std::optional<AlignConfig> align;
};

// Collective on a sharded model (every rank passes the same records; see target_scores.h).
// Throws naming the record when the template cannot render it.
HeldOutLoss heldout_loss(EvalModel& model, const ChatTemplate& tmpl, const Tokenizer& tok,
                         const std::vector<HeldOutRecord>& records, const HeldOutLossOptions& options);

}  // namespace agenttune::eval
