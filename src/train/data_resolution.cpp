#include "agenttune/data/source_dataset.h"
#include "agenttune/train/data_resolution.h"

#include <fmt/format.h>

#include <cmath>

#include "agenttune/data/token_shards.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace {

std::string weights_text(const std::vector<MixtureSource>& sources) {
  double total = 0;
  for (const auto& s : sources) total += s.weight;
  std::string out;
  for (const auto& s : sources) out += fmt::format("{}{} {:.4f}", out.empty() ? "" : ", ", s.name, s.weight / total);
  return out;
}

}  // namespace

TrainConfig resolve_data_config(const TrainConfig& cfg) {
  TrainConfig r = cfg;
  auto& sources = r.data.sources;
  const bool convert = cfg.data.agent_share || cfg.data.weight_unit == ShareUnit::Samples;
  const bool count = convert || cfg.train.epochs > 0;
  std::vector<ShardManifest> manifests;
  if (count)
    for (const auto& s : sources) {
      try {
        manifests.push_back(source_manifest(s));
      } catch (const std::exception& e) {
        fail("data.sources '{}': the data plan needs its prepared folder: {}", s.name, e.what());
      }
    }
  if (convert) {
    std::vector<ShareSource> share;
    for (size_t i = 0; i < sources.size(); ++i)
      share.push_back({sources[i].name, sources[i].agent, manifests[i].documents,
                       manifests[i].has_mask ? manifests[i].trained_tokens : manifests[i].tokens});
    if (cfg.data.agent_share) {
      auto w = weights_for_agent_share(*cfg.data.agent_share, share, cfg.data.weight_unit);
      for (size_t i = 0; i < sources.size(); ++i) sources[i].weight = w[i];
    } else {
      // A weight in samples becomes tokens: a source with longer samples needs more tokens to be
      // drawn as often.
      for (size_t i = 0; i < sources.size(); ++i) {
        if (share[i].samples <= 0 || share[i].trained_tokens <= 0)
          fail("data.sources '{}' ({}): no samples with trained tokens to weigh", sources[i].name,
               sources[i].path.string());
        sources[i].weight *= static_cast<double>(share[i].trained_tokens) / static_cast<double>(share[i].samples);
      }
    }
    // A source weighed to zero (agent_share 0 or 1) is left out rather than kept at weight 0.
    std::vector<MixtureSource> kept;
    for (const auto& s : sources)
      if (s.weight > 0) kept.push_back(s);
    log::info("data: weights in {}{} -> trained-token weights {}",
              cfg.data.weight_unit == ShareUnit::Samples ? "samples" : "trained tokens",
              cfg.data.agent_share ? fmt::format(" with agent share {}", *cfg.data.agent_share) : "",
              weights_text(kept));
    sources = std::move(kept);
    r.data.weight_unit = ShareUnit::TrainedTokens;
    r.data.agent_share.reset();
  }
  if (cfg.train.epochs > 0) {
    int64_t tokens = 0, documents = 0;
    for (const auto& m : manifests) tokens += m.tokens, documents += m.documents;
    const int64_t seqs = global_batch_sequences(cfg);
    // The rows a pass fills, counted by the mixture itself: conversations are placed whole, so a
    // packed SFT pass needs more rows than its tokens / seq_len.
    const double rows = Mixture(mixture_options(r)).rows_per_pass();
    r.train.max_steps = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(cfg.train.epochs * rows / static_cast<double>(seqs))));
    r.train.epochs = 0;
    log::info("data: {} epoch(s) of {} documents / {} tokens ({:.0f} rows of {}) = {} steps of {} sequences",
              cfg.train.epochs, documents, tokens, rows, cfg.data.seq_len, r.train.max_steps, seqs);
  }
  return r;
}

int64_t global_batch_sequences(const TrainConfig& cfg) {
  if (cfg.train.global_batch_sequences > 0) return cfg.train.global_batch_sequences;
  return std::max<int64_t>(1, (cfg.train.global_batch_tokens + cfg.data.seq_len - 1) / cfg.data.seq_len);
}

MixtureOptions mixture_options(const TrainConfig& cfg) {
  MixtureOptions m;
  m.sources = cfg.data.sources;
  m.seq_len = cfg.data.seq_len;
  m.seed = cfg.train.seed;
  m.validation_fraction = cfg.data.validation_fraction;
  m.attention = cfg.data.attention;
  m.packing = cfg.data.packing;
  m.overlength = cfg.data.overlength;
  // As prepare recorded it (a byte-level fingerprint covers tokenizer_config.json too).
  const auto& tok = cfg.data.tokenizer;
  if (!tok.empty()) m.tokenizer_sha256 = Tokenizer::load(tok, false).fingerprint();
  m.tokenizer = cfg.data.tokenizer;
  return m;
}

}  // namespace agenttune
