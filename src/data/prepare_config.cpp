#include "agenttune/data/prepare_config.h"

#include "agenttune/util/error.h"

namespace agenttune {

void PrepareConfig::validate(const std::string& src) const {
  if (tokenizer.empty()) fail("{}: tokenizer is required (a SentencePiece .model, a tokenizer.json or a model folder)", src);
  if (corpora.empty()) fail("{}: corpora must list at least one corpus", src);
  for (size_t i = 0; i < corpora.size(); ++i) {
    const auto& c = corpora[i];
    if (c.inputs.empty()) fail("{}: corpora[{}] '{}': inputs is empty", src, i, c.name);
    if (c.output.empty()) fail("{}: corpora[{}] '{}': output is required", src, i, c.name);
  }
  if (shard_tokens <= 0) fail("{}: shard_tokens must be positive", src);
  if (threads < 0) fail("{}: threads must be >= 0", src);
}

}  // namespace agenttune
