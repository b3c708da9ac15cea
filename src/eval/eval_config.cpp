#include "agenttune/eval/eval_config.h"

#include "agenttune/chat/template.h"
#include "agenttune/readers/dataset.h"
#include <fmt/ranges.h>

#include "agenttune/util/error.h"

namespace agenttune::eval {

void EvalConfig::validate(const std::string& src) const {
  if (empty()) fail("{}: nothing to evaluate: list `records` (held-out conversations) or `multiple_choice` files", src);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (r.path.empty()) fail("{}: records[{}].path is required", src, i);
    // The format decides each record's task, so it is named, not detected.
    if (r.format != "heldout" && parse_format(r.format) == DatasetFormat::Auto)
      fail("{}: records[{}].format: name the dataset's format (heldout, agentinstruct, toolbench, agentflan, "
           "sharegpt, openai), not auto: it decides each record's task", src, i);
    if (r.format == "heldout" && r.negative)
      fail("{}: records[{}].negative is for dataset files; a heldout.jsonl flags its negatives per record", src, i);
  }
  if (!records.empty()) {
    if (chat_template.empty())
      fail("{}: template is required with records (the chat template the model was tuned with, one of {})", src,
           fmt::join(template_names(), ", "));
    make_template(chat_template);  // throws listing the names
    if (!next_action && !heldout_loss)
      fail("{}: records are listed but next_action and heldout_loss are both false: nothing is run on them", src);
  }
  if (max_new_tokens <= 0) fail("{}: max_new_tokens must be positive, got {}", src, max_new_tokens);
  if (batch_size <= 0) fail("{}: batch_size must be positive, got {}", src, batch_size);
  if (max_turns_per_task < 0) fail("{}: max_turns_per_task must be >= 0 (0 = all), got {}", src, max_turns_per_task);
  for (size_t i = 0; i < multiple_choice.size(); ++i) {
    const auto& c = multiple_choice[i];
    if (c.path.empty()) fail("{}: multiple_choice[{}].path is required", src, i);
    if (c.shots < 0) fail("{}: multiple_choice[{}].shots must be >= 0, got {}", src, i, c.shots);
  }
}

}  // namespace agenttune::eval
