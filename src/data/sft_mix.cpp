#include "agenttune/data/sft_mix.h"

#include "agenttune/data/token_shards.h"
#include "agenttune/util/error.h"

namespace agenttune {

ShareSource share_source(const std::string& name, const std::filesystem::path& dir, bool agent) {
  ShardManifest m = ShardManifest::read(dir / "manifest.json");
  return {name, agent, m.documents, m.trained_tokens};
}

std::vector<double> weights_for_agent_share(double eta, const std::vector<ShareSource>& sources,
                                            ShareUnit unit) {
  if (!(eta >= 0.0 && eta <= 1.0)) fail("agent share eta must be between 0 and 1, got {}", eta);
  // Per group: the denominator that turns a source's trained tokens into its share of the group.
  double denom[2] = {0, 0};
  for (const auto& s : sources) {
    if (s.samples < 0 || s.trained_tokens < 0)
      fail("mixture source {}: negative counts ({} samples, {} trained tokens)", s.name, s.samples,
           s.trained_tokens);
    denom[s.agent] += static_cast<double>(unit == ShareUnit::Samples ? s.samples : s.trained_tokens);
  }
  const double share[2] = {1.0 - eta, eta};
  for (int g : {0, 1})
    if (share[g] > 0 && denom[g] <= 0)
      fail("agent share eta = {} needs {} sources with data, but there are none", eta,
           g ? "agent" : "general");
  std::vector<double> w;
  double total = 0;
  for (const auto& s : sources) {
    const double x = share[s.agent] > 0 ? share[s.agent] * static_cast<double>(s.trained_tokens) / denom[s.agent] : 0;
    w.push_back(x);
    total += x;
  }
  if (total <= 0) fail("agent share: no source has trained tokens");
  for (double& x : w) x /= total;
  return w;
}

}  // namespace agenttune
