// agenttune inspect --config FILE: what training will see, before any GPU hour is spent on it.
// - An SFT prepare config (`datasets:`): the prepare pipeline (read -> transforms -> template ->
//   truncation) runs without writing; N samples per dataset are shown with their trained spans
//   highlighted, then each dataset's sample and trained-token counts and the transforms' counts,
//   exactly as `agenttune prepare` would report them.
// - A train config (`data:`): the first N rows of the training stream (packed or padded) with
//   document boundaries and trained targets, and each source's size and realised share.
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <random>

#include "agenttune/data/source_dataset.h"
#include "agenttune/config/load.h"
#include "agenttune/data/mixture.h"
#include "agenttune/data/sft_prepare.h"
#include "agenttune/train/data_resolution.h"
#include "agenttune/util/error.h"
#include "agenttune/util/strings.h"
#include "commands.h"
#include "token_view.h"

namespace agenttune::cli {

namespace {

struct InspectArgs {
  std::string config, dataset;
  std::vector<std::string> overrides;
  int64_t samples = 3;
  uint64_t seed = 0;
  bool plain = false, color = false;
};

struct ShownSample {
  uint64_t index = 0;  // among the dataset's kept samples
  std::string id, file;
  int64_t record = -1;
  RenderedSample rendered;
};

// A seeded uniform choice of `size` samples from a stream of unknown length (reservoir sampling).
struct Reservoir {
  size_t size;
  std::mt19937_64 rng;
  uint64_t seen = 0;
  std::vector<ShownSample> kept;

  void offer(const Conversation& c, const RenderedSample& s) {
    const uint64_t k = seen++;
    size_t slot = kept.size();
    if (kept.size() >= size) {
      slot = static_cast<size_t>(rng() % (k + 1));
      if (slot >= size) return;
    } else {
      kept.emplace_back();
    }
    kept[slot] = {k, c.id, c.file, c.record, s};
  }
};

std::vector<TokenMark> sample_marks(const RenderedSample& s) {
  std::vector<TokenMark> m;
  m.reserve(s.trained.size());
  for (uint8_t t : s.trained) m.push_back(t ? TokenMark::Trained : TokenMark::Context);
  return m;
}

std::string percent(int64_t part, int64_t whole) {
  return whole > 0 ? fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / static_cast<double>(whole)) : "-";
}

int inspect_sft(const InspectArgs& a, const TokenViewStyle& style) {
  auto overrides = a.overrides;
  overrides.push_back("progress=false");
  auto cfg = load_config<SftPrepareConfig>(a.config, overrides);
  if (!a.dataset.empty() && std::none_of(cfg.datasets.begin(), cfg.datasets.end(),
                                         [&](const SftDatasetConfig& d) { return d.name == a.dataset; }) &&
      a.dataset != cfg.transforms.format_following.source && a.dataset != cfg.transforms.negatives.source)
    fail("--dataset {}: no dataset of that name in {}", a.dataset, a.config);
  Tokenizer tok = Tokenizer::load(cfg.tokenizer);
  prepare_tokenizer(*make_template(cfg.chat_template, TemplateOptions{cfg.default_system}), tok);

  std::map<std::string, Reservoir> shown;
  SftPrepareHooks hooks;
  hooks.write = false;
  hooks.on_kept = [&](const std::string& dataset, const Conversation& c, const RenderedSample& s) {
    if (!a.dataset.empty() && dataset != a.dataset) return;
    auto it = shown.try_emplace(dataset, Reservoir{static_cast<size_t>(a.samples), std::mt19937_64(a.seed), 0, {}});
    it.first->second.offer(c, s);
  };
  auto report = prepare_sft(cfg, hooks);

  std::cout << fmt::format("template {} ({}), max_seq_len {}, overlength {}; nothing was written\n",
                           cfg.chat_template, a.config, cfg.max_seq_len, ConfigScalar<Overlength>::format(cfg.overlength))
            << token_view_legend(style) << "\n";
  for (const auto& d : report.datasets) {
    auto it = shown.find(d.name);
    if (it == shown.end()) continue;
    auto& samples = it->second.kept;
    std::sort(samples.begin(), samples.end(), [](const auto& x, const auto& y) { return x.index < y.index; });
    for (const auto& s : samples) {
      const int64_t n = static_cast<int64_t>(s.rendered.ids.size()), t = s.rendered.num_trained();
      std::string where = s.file.empty() ? std::string("generated") : fmt::format("{} record {}", s.file, s.record);
      std::cout << fmt::format("\n── {} sample {} of {} (id {}, {}): {} tokens, {} trained ({})\n", d.name,
                               s.index + 1, d.kept, s.id.empty() ? "-" : s.id, where, n, t, percent(t, n))
                << render_tokens(tok, s.rendered.ids, sample_marks(s.rendered), style) << "\n";
    }
  }

  std::cout << fmt::format("\n{:<22} {:>9} {:>8} {:>9} {:>10} {:>12} {:>12} {:>8} {:>10}  {}\n", "dataset",
                           "samples", "kept", "too_long", "documents", "tokens", "trained", "trained%",
                           "trained/doc", "dropped");
  int64_t all_trained = 0;
  for (const auto& d : report.datasets) all_trained += d.trained_tokens;
  for (const auto& d : report.datasets)
    std::cout << fmt::format("{:<22} {:>9} {:>8} {:>9} {:>10} {:>12} {:>12} {:>8} {:>10.1f}  {}\n", d.name,
                             d.samples_in, d.kept, d.overlength.over, d.documents, d.tokens, d.trained_tokens,
                             percent(d.trained_tokens, d.tokens),
                             d.documents ? static_cast<double>(d.trained_tokens) / static_cast<double>(d.documents) : 0.0,
                             d.dropped.empty() ? std::string("-") : join_counts(d.dropped, " "));
  std::cout << fmt::format("trained tokens in all: {}; share by dataset:", all_trained);
  for (const auto& d : report.datasets) std::cout << fmt::format(" {} {}", d.name, percent(d.trained_tokens, all_trained));
  std::cout << "\n";
  for (const auto& d : report.datasets)
    if (d.overlength.over > 0) std::cout << fmt::format("max_seq_len {}: {}\n", d.name, d.overlength.describe(cfg.max_seq_len));
  for (const auto& d : report.datasets)
    if (!d.read.summary().empty()) std::cout << fmt::format("read {}: {}\n", d.name, d.read.summary());
  for (const auto* t : {&report.transforms.align, &report.transforms.balance, &report.transforms.format_following,
                        &report.transforms.negatives})
    if (!t->counts.empty()) std::cout << "transform " << t->summary() << "\n";
  return 0;
}

int inspect_train(const InspectArgs& a, const TokenViewStyle& style) {
  auto cfg = resolve_data_config(load_config<TrainConfig>(a.config, a.overrides));
  if (cfg.data.tokenizer.empty()) fail("{}: data.tokenizer is needed to show the stream as text", a.config);
  Tokenizer tok = Tokenizer::load(cfg.data.tokenizer);
  std::vector<ShardManifest> manifests;
  for (const auto& s : cfg.data.sources) {
    manifests.push_back(source_manifest(s));
    for (const auto& t : manifests.back().added_tokens) tok.add_token(t);
  }
  Mixture data(mixture_options(cfg));
  std::cout << fmt::format("{} rows of {} tokens ({}, attention {}) from {}\n{}\n", a.samples, cfg.data.seq_len,
                           ConfigScalar<Packing>::format(cfg.data.packing), ConfigScalar<AttentionMode>::format(cfg.data.attention), a.config,
                           token_view_legend(style));
  for (int64_t r = 0; r < a.samples; ++r) {
    auto b = data.next_batch(1);
    const int64_t n = b.tokens.size(1);
    auto tok_a = b.tokens.accessor<int64_t, 2>();
    auto tgt = b.targets.accessor<int64_t, 2>();
    auto doc = b.doc_ids.accessor<int64_t, 2>();
    std::vector<int32_t> ids(n);
    std::vector<TokenMark> marks(n, TokenMark::Context);
    std::vector<size_t> starts;
    for (int64_t k = 0; k < n; ++k) {
      ids[k] = static_cast<int32_t>(tok_a[0][k]);
      // The target at k-1 is token k: that is the token the loss teaches.
      if (k > 0 && tgt[0][k - 1] != -100) marks[k] = TokenMark::Trained;
      if (k >= b.real_tokens) marks[k] = TokenMark::Padding;
      if (k > 0 && doc[0][k] != doc[0][k - 1] && k < b.real_tokens) starts.push_back(static_cast<size_t>(k));
    }
    std::string by_source;
    for (size_t s = 0; s < cfg.data.sources.size(); ++s)
      if (b.source_tokens[s] > 0) by_source += fmt::format(" {} {}", cfg.data.sources[s].name, b.source_tokens[s]);
    std::cout << fmt::format("\n── row {}: {} tokens, {} document(s), {} trained targets ({})\n", r + 1, b.real_tokens,
                             starts.size() + 1, b.trained_tokens, by_source.empty() ? "none" : by_source.substr(1))
              << render_tokens(tok, ids, marks, style, starts) << "\n";
  }
  double total_w = 0;
  for (const auto& s : cfg.data.sources) total_w += s.weight;
  std::cout << fmt::format("\n{:<22} {:>8} {:>8} {:>10} {:>12} {:>12} {:>10}\n", "source", "weight", "target",
                           "documents", "tokens", "trained", "realised");
  auto shares = data.shares();
  for (size_t s = 0; s < cfg.data.sources.size(); ++s) {
    const auto& m = manifests[s];
    std::cout << fmt::format("{:<22} {:>8.3g} {:>7.1f}% {:>10} {:>12} {:>12} {:>9.1f}%\n", cfg.data.sources[s].name,
                             cfg.data.sources[s].weight, 100 * cfg.data.sources[s].weight / total_w, m.documents,
                             m.tokens, m.has_mask ? m.trained_tokens : m.tokens, 100 * shares[s]);
  }
  std::cout << "(target and realised shares count trained tokens; realised is over the rows shown)\n";
  for (size_t s = 0; s < cfg.data.sources.size(); ++s)
    if (data.overlength(s).over > 0)
      std::cout << fmt::format("data.seq_len {}, overlength {}: {}\n", cfg.data.sources[s].name,
                               ConfigScalar<Overlength>::format(cfg.data.overlength),
                               data.overlength(s).describe(cfg.data.seq_len));
  return 0;
}

}  // namespace

Command inspect_command() {
  auto a = std::make_shared<InspectArgs>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand(
        "inspect", "Show what training sees: samples with trained spans highlighted, counts per source");
    s->add_option("--config", a->config, "an SFT prepare config (datasets:) or a train config (data:)")
        ->required()
        ->check(CLI::ExistingFile);
    s->add_option("--set", a->overrides, "override a config key: a.b=value (repeatable)");
    s->add_option("--samples", a->samples, "samples per dataset (prepare config) or rows (train config)")
        ->check(CLI::NonNegativeNumber);
    s->add_option("--dataset", a->dataset, "show samples of this dataset only (counts cover all)");
    s->add_option("--seed", a->seed, "which samples are shown (a seeded uniform choice)");
    auto* plain = s->add_flag("--plain", a->plain, "mark trained spans with ⟦ ⟧ instead of colours");
    s->add_flag("--color", a->color, "colours even when stdout is not a terminal")->excludes(plain);
    return s;
  };
  c.run = [a] {
    TokenViewStyle style;
    style.color = a->color || (!a->plain && isatty(STDOUT_FILENO));
    if (config_has_key(a->config, "datasets")) return inspect_sft(*a, style);
    return inspect_train(*a, style);
  };
  return c;
}

}  // namespace agenttune::cli
