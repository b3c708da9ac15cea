#include "agenttune/model/adapter.h"

#include <fmt/ranges.h>

#include <cmath>

#include "agenttune/util/error.h"
#include "agenttune/util/strings.h"

namespace agenttune {

namespace {

void validate_targets(const std::vector<std::string>& targets, const std::string& where) {
  if (targets.empty())
    fail("{}.target_modules is empty: an adapter must wrap at least one of {}", where, fmt::join(kAdapterTargets, ", "));
  const std::vector<std::string> known(kAdapterTargets.begin(), kAdapterTargets.end());
  for (size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    bool valid = false;
    for (const auto& k : known) valid = valid || k == t;
    if (!valid) {
      // PEFT also matches suffixes and regexes; we take the seven short names only, so an
      // adapter we write means the same projections to PEFT and vLLM.
      const std::string hint = nearest(t, known);
      fail("{}.target_modules: '{}' is not a Llama projection{}; the choices are {}", where, t,
           hint.empty() ? std::string() : fmt::format(" (did you mean '{}'?)", hint), fmt::join(kAdapterTargets, ", "));
    }
    for (size_t j = 0; j < i; ++j)
      if (targets[j] == t) fail("{}.target_modules lists '{}' twice", where, t);
  }
}

}  // namespace

void AdapterConfig::validate(const std::string& where) const {
  if (kind == AdapterKind::None) {
    // Every setting takes effect or is an error: a rank or target list under kind none would train
    // a full model while the config reads like a LoRA run.
    const AdapterConfig d;
    const char* set = rank != d.rank ? "rank" : alpha != d.alpha ? "alpha" : dropout != d.dropout ? "dropout"
                    : target_modules != d.target_modules ? "target_modules" : init_seed != d.init_seed ? "init_seed"
                    : rslora != d.rslora ? "rslora" : nullptr;
    if (set)
      fail("{}.{} is set but kind is none, so it would be ignored: set kind to lora or qlora, or remove {}", where,
           set, set);
  }
  if (rank < 1) fail("{}.rank must be at least 1, got {}", where, rank);
  if (!std::isfinite(alpha) || alpha <= 0) fail("{}.alpha must be a positive number, got {}", where, alpha);
  if (!(dropout >= 0 && dropout < 1)) fail("{}.dropout must be in [0, 1), got {}", where, dropout);
  validate_targets(target_modules, where);
}

}  // namespace agenttune
