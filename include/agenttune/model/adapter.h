#pragma once
// `model.adapter`: low-rank adapters (LoRA, Hu et al. 2021) on the decoder's projections, with the
// base frozen; QLoRA (Dettmers et al. 2023) also stores the frozen projections as NF4. The values
// follow PEFT's LoraConfig so a run's adapter is a PEFT adapter: y = W x + scale * B (A dropout(x)),
// scale = alpha / rank (alpha / sqrt(rank) with rslora), A Kaiming-uniform (a = sqrt(5)), B zero,
// so step 0 computes exactly the base model.
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agenttune/config/scalars.h"

namespace agenttune {

enum class AdapterKind { None, Lora, Qlora };

template <>
struct EnumNames<AdapterKind> {
  static constexpr std::array<std::pair<AdapterKind, std::string_view>, 3> values = {
      {{AdapterKind::None, "none"}, {AdapterKind::Lora, "lora"}, {AdapterKind::Qlora, "qlora"}}};
};

// The projections an adapter may wrap, by their Hugging Face (and PEFT target_modules) names.
inline constexpr std::array<std::string_view, 7> kAdapterTargets = {"q_proj", "k_proj",    "v_proj", "o_proj",
                                                                   "gate_proj", "up_proj", "down_proj"};

struct AdapterConfig {
  AdapterKind kind = AdapterKind::None;
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0;
  std::vector<std::string> target_modules = {kAdapterTargets.begin(), kAdapterTargets.end()};
  uint64_t init_seed = 0;
  bool rslora = false;  // scale alpha / sqrt(rank) (rsLoRA) instead of alpha / rank

  bool enabled() const { return kind != AdapterKind::None; }
  double scale() const { return rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank); }
  bool targets(std::string_view projection) const {
    for (const auto& t : target_modules)
      if (t == projection) return true;
    return false;
  }
  // Throws agenttune::Error naming `where` (the config file and key) for a rank < 1, a dropout
  // outside [0, 1), an empty or unknown target (naming the nearest valid one).
  void validate(const std::string& where) const;
};

template <class V>
void visit(V& v, AdapterConfig& a) {
  v("kind", a.kind);
  v("rank", a.rank);
  v("alpha", a.alpha);
  v("dropout", a.dropout);
  v("target_modules", a.target_modules);
  v("init_seed", a.init_seed);
  v("rslora", a.rslora);
}

}  // namespace agenttune
