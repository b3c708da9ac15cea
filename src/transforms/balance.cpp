// Capability balancing (Agent-FLAN §4.3): capabilities the model learns fast (retrieval,
// understanding) need fewer trained examples than reasoning, so part of their turns stop
// carrying loss. Selection is an exact seeded share per capability, not a per-turn coin, so
// the ratios hold on small sets too.
#include <algorithm>
#include <cmath>
#include <utility>

#include "agenttune/transforms/transforms.h"
#include "internal.h"

namespace agenttune {

void balance_capabilities(std::vector<Conversation>& convs, const BalanceConfig& config,
                          TransformReport& report) {
  using namespace transforms_detail;
  const std::pair<std::string_view, double> weights[] = {
      {capability::reasoning, config.weights.reasoning},
      {capability::retrieval, config.weights.retrieval},
      {capability::understanding, config.weights.understanding},
      {capability::instruction_following, config.weights.instruction_following}};
  validate_balance(config, "balance");

  std::vector<bool> had_trained(convs.size(), false);
  std::vector<std::vector<std::pair<size_t, size_t>>> by_cap(std::size(weights));
  for (size_t c = 0; c < convs.size(); ++c) {
    for (size_t t = 0; t < convs[c].turns.size(); ++t) {
      const Turn& turn = convs[c].turns[t];
      if (!trains(turn)) continue;
      had_trained[c] = true;
      if (turn.capability.empty()) continue;
      auto it = std::find_if(std::begin(weights), std::end(weights),
                             [&](const auto& w) { return w.first == turn.capability; });
      if (it == std::end(weights)) {
        report.add("turns_other_capability");
        continue;
      }
      by_cap[static_cast<size_t>(it - std::begin(weights))].emplace_back(c, t);
    }
  }

  for (size_t k = 0; k < std::size(weights); ++k) {
    auto& turns = by_cap[k];
    if (turns.empty()) continue;
    const std::string cap(weights[k].first);
    Rng rng(mix(stage_seed(config.seed, "balance"), hash_text(cap)));
    rng.shuffle(turns);
    const auto kept = static_cast<size_t>(share(weights[k].second, turns.size()));
    for (size_t i = kept; i < turns.size(); ++i) convs[turns[i].first].turns[turns[i].second].loss = false;
    report.add(cap + ".trained", static_cast<int64_t>(turns.size()));
    report.add(cap + ".kept", static_cast<int64_t>(kept));
    report.add(cap + ".dropped", static_cast<int64_t>(turns.size() - kept));
  }

  if (config.drop_untrained) {
    std::vector<Conversation> out;
    out.reserve(convs.size());
    for (size_t c = 0; c < convs.size(); ++c) {
      bool trained = std::any_of(convs[c].turns.begin(), convs[c].turns.end(), trains);
      if (had_trained[c] && !trained) report.add("conversations_dropped_untrained");
      else out.push_back(std::move(convs[c]));
    }
    convs = std::move(out);
  }
  report.add("conversations_out", static_cast<int64_t>(convs.size()));
}

}  // namespace agenttune
