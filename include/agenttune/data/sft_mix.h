#pragma once
// Mixing knobs of the hybrid instruction tuning recipes, turned into the train config's
// per-source mixture weights (data.sources[].weight), which the mixture meets in TRAINED TOKENS.
//
// - AgentTuning: J = eta * E_agent + (1 - eta) * E_general with eta = 0.2, the share of agent
//   (AgentInstruct) SAMPLES in what is drawn (recipes.md §3.3).
// - Agent-FLAN: ShareGPT : agent = 1 : 1 (§3.4), i.e. eta = 0.5 in samples.
// Within each group sources are drawn as if concatenated (each in proportion to its size), so
// splitting a group into more folders does not change what is trained. With unit = Samples a
// source's token weight is its group share times its trained tokens over the group's samples,
// because a source whose samples are longer must get more tokens to be drawn as often.
//
// Per-dataset sample counts (subsets, repeats) are the SFT prepare config's max_samples and
// upsample (data/sft_prepare.h); they change a folder's content, these weights only its share.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "agenttune/config/scalars.h"

namespace agenttune {

enum class ShareUnit { Samples, TrainedTokens };

template <>
struct EnumNames<ShareUnit> {
  static constexpr std::array<std::pair<ShareUnit, std::string_view>, 2> values = {
      {{ShareUnit::TrainedTokens, "trained_tokens"}, {ShareUnit::Samples, "samples"}}};
};

struct ShareSource {
  std::string name;
  bool agent = false;
  int64_t samples = 0;         // documents in the prepared folder
  int64_t trained_tokens = 0;  // mask ones in the prepared folder
};

// A prepared folder's counts from its manifest.json.
ShareSource share_source(const std::string& name, const std::filesystem::path& dir, bool agent);

// Weights (summing to 1) such that agent sources get `eta` of the samples (or trained tokens)
// drawn and the others 1 - eta. Throws for eta outside [0, 1] or a group that eta needs but
// that is missing or empty.
std::vector<double> weights_for_agent_share(double eta, const std::vector<ShareSource>& sources,
                                            ShareUnit unit = ShareUnit::Samples);

}  // namespace agenttune
