#include "agenttune/data/sft_prepare.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <set>
#include <thread>

#include "agenttune/chat/template_tokenizers.h"
#include "agenttune/data/heldout.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/log.h"
#include "agenttune/util/strings.h"
#include "negative_pairs.h"
#include "sft_output.h"

namespace agenttune {

namespace fs = std::filesystem;
using sft_detail::SftOutput;

namespace {

template <class Bad>
void validate_holdout(double h, const std::string& key, Bad&& bad) {
  if (!std::isfinite(h) || h < 0 || (h >= 1 && h != std::floor(h)))
    bad(fmt::format("{} must be 0 (none), a share in (0, 1) or a whole number of records >= 1 per task, got {}",
                    key, h));
}

// How many of a task's n records `holdout` sets aside (see SftDatasetConfig::holdout).
size_t holdout_count(double holdout, size_t n) {
  if (holdout < 1) return static_cast<size_t>(std::llround(holdout * static_cast<double>(n)));
  // Compared as doubles first: a count past size_t's range (1e30) has no defined conversion.
  return holdout >= static_cast<double>(n) ? n : static_cast<size_t>(holdout);
}

// Moves a seeded `holdout` of each (task, negative) group of `convs` out, as held-out records
// counted in `counts`. `classify` gives a conversation's task and negative flag.
template <class Classify>
std::vector<HeldOutRecord> hold_out(std::vector<Conversation>& convs, double holdout, uint64_t seed,
                                    const std::string& dataset, Classify&& classify,
                                    std::map<std::string, int64_t>& counts) {
  if (holdout <= 0) return {};
  std::vector<HeldOutRecord> tagged(convs.size());
  std::map<std::string, std::vector<size_t>> groups;
  for (size_t i = 0; i < convs.size(); ++i) {
    auto [task, negative] = classify(convs[i]);
    tagged[i].task = task;
    tagged[i].negative = negative;
    groups[std::string(task_name(task)) + (negative ? " negative" : "")].push_back(i);
  }
  std::vector<bool> out(convs.size(), false);
  for (const auto& [key, members] : groups) {
    const auto pick = sft_detail::seeded_subset(members.size(), holdout_count(holdout, members.size()),
                                                sft_detail::stream_seed(seed, dataset, "holdout " + key));
    for (size_t j : pick) out[members[j]] = true;
    if (!pick.empty()) counts[key] += static_cast<int64_t>(pick.size());
  }
  std::vector<HeldOutRecord> held;
  std::vector<Conversation> train;
  for (size_t i = 0; i < convs.size(); ++i) {
    if (!out[i]) {
      train.push_back(std::move(convs[i]));
      continue;
    }
    tagged[i].conv = std::move(convs[i]);
    held.push_back(std::move(tagged[i]));
  }
  convs = std::move(train);
  return held;
}

// Writes (or, with nothing held out, removes a stale) OUTPUT/heldout.jsonl.
void write_heldout_file(const fs::path& output, const std::vector<HeldOutRecord>& held, const SftPrepareHooks& hooks) {
  if (!hooks.write || output.empty()) return;
  if (held.empty()) return remove_file(output / kHeldOutFile);
  create_dirs(output);
  write_heldout(output / kHeldOutFile, held);
}

// The conversion dataset `d` gets under `chat_template`; nullopt = its calls stay text.
std::optional<NativeCallOptions> native_tool_calls(const SftDatasetConfig& d, const std::string& chat_template) {
  if (d.tool_calls == ToolCallForm::Text || (d.tool_calls == ToolCallForm::Auto && d.transform)) return std::nullopt;
  return native_call_options(chat_template);  // validate() refused native where this is nullopt
}

}  // namespace

void SftPrepareConfig::validate(const std::string& source) const {
  auto bad = [&](const std::string& what) { fail("{}: {}", source, what); };
  if (tokenizer.empty())
    bad("tokenizer is required (a SentencePiece .model, a byte-level BPE tokenizer.json or a model folder)");
  if (std::find(template_names().begin(), template_names().end(), chat_template) == template_names().end())
    make_template(chat_template);  // throws, listing the valid names
  if (datasets.empty()) bad("datasets: at least one dataset is required");
  if (max_seq_len < 0) bad(fmt::format("max_seq_len must be >= 0 (0 = no limit), got {}", max_seq_len));
  if (shard_tokens <= 0) bad(fmt::format("shard_tokens must be positive, got {}", shard_tokens));
  if (threads < 0) bad(fmt::format("threads must be >= 0, got {}", threads));
  std::set<std::string> names{transforms.format_following.source, transforms.negatives.source};
  std::set<fs::path> outputs;
  for (size_t i = 0; i < datasets.size(); ++i) {
    const auto& d = datasets[i];
    const std::string at = fmt::format("datasets[{}] ({})", i, d.name);
    if (d.name.empty()) bad(fmt::format("datasets[{}].name is required", i));
    if (!names.insert(d.name).second)
      bad(fmt::format("{}: the name is used twice (or by a transform's generated source)", at));
    if (d.paths.empty()) bad(at + ".paths: at least one file or folder is required");
    if (d.output.empty()) bad(at + ".output is required");
    if (!outputs.insert(d.output.lexically_normal()).second)
      bad(fmt::format("{}.output {} is used by another dataset", at, d.output.string()));
    if (d.max_samples < 0) bad(fmt::format("{}.max_samples must be >= 0, got {}", at, d.max_samples));
    if (!(d.upsample >= 0) || !std::isfinite(d.upsample))
      bad(fmt::format("{}.upsample must be a finite number >= 0, got {}", at, d.upsample));
    validate_holdout(d.holdout, at + ".holdout", bad);
    if (d.tool_calls == ToolCallForm::Native) {
      if (!native_call_options(chat_template))
        bad(fmt::format("{}.tool_calls: native, but template {} cannot render tool definitions or calls "
                        "(templates that can: {}); set tool_calls: text or use one of those templates",
                        at, chat_template, fmt::join(tool_template_names(), ", ")));
      if (d.transform)
        bad(fmt::format("{}.tool_calls: native and transform: true exclude each other (the Agent-FLAN "
                        "transforms rewrite ReAct steps into chat turns); set one of them",
                        at));
    }
  }
  validate_holdout(negatives_holdout, "negatives_holdout", bad);
  if (negatives_holdout > 0 && !transforms.negatives.enabled)
    bad("negatives_holdout is set but transforms.negatives is disabled, so no negatives are generated");
  agenttune::validate(transforms, "transforms");
}

std::vector<RenderedSample> fitted_samples(const RenderedSample& s, const FittedConversation& fit) {
  std::vector<RenderedSample> out;
  for (const auto& p : fit.pieces) {
    RenderedSample piece;
    piece.ids.assign(s.ids.begin(), s.ids.begin() + p.head);
    piece.trained.assign(p.head, 0);
    piece.ids.insert(piece.ids.end(), s.ids.begin() + p.begin, s.ids.begin() + p.end);
    piece.trained.insert(piece.trained.end(), s.trained.begin() + p.begin, s.trained.begin() + p.end);
    out.push_back(std::move(piece));
  }
  return out;
}

namespace {

// One dataset on its way to disk: its conversations after reading (and transforms).
struct Pending {
  SftDatasetReport report;
  std::vector<Conversation> convs;
  OnProblem on_render_error = OnProblem::Error;
  double upsample = 1.0;
  std::vector<fs::path> paths;  // empty for the transforms' generated datasets

  // "name (file, ...)" or "name (generated)": errors say which files to look at.
  std::string label() const {
    std::vector<std::string> shown;
    for (const auto& p : paths) shown.push_back(p.string());
    return fmt::format("{} ({})", report.name, shown.empty() ? std::string("generated") : join_first(shown));
  }
};

struct Renderer {
  const ChatTemplate& tmpl;
  const Tokenizer& tok;
  int threads;

  // Renders convs[idx[i]] into out[i]; a template error becomes errors[i] (the first one by
  // index is reported, so the message does not depend on thread timing).
  void run(const std::vector<Conversation>& convs, const std::vector<size_t>& idx,
           std::vector<RenderedSample>& out, std::vector<std::string>& errors) const {
    out.assign(idx.size(), {});
    errors.assign(idx.size(), {});
    std::atomic<size_t> next{0};
    auto work = [&] {
      constexpr size_t kChunk = 32;
      for (size_t b; (b = next.fetch_add(kChunk)) < idx.size();)
        for (size_t i = b; i < std::min(b + kChunk, idx.size()); ++i) {
          try {
            out[i] = tmpl.render(convs[idx[i]], tok);
          } catch (const std::exception& e) {
            errors[i] = e.what();
          }
        }
    };
    const size_t n = std::min<size_t>(threads, (idx.size() + 255) / 256);
    if (n <= 1) return work();
    std::vector<std::thread> pool;
    for (size_t t = 0; t < n; ++t) pool.emplace_back(work);
    for (auto& t : pool) t.join();
  }
};

void prepare_one(Pending& p, const SftPrepareConfig& cfg, const Renderer& r, uint64_t seed,
                 const SftPrepareHooks& hooks) {
  auto& rep = p.report;
  rep.max_seq_len = cfg.max_seq_len;
  const std::string tname = r.tmpl.name();
  const size_t n = p.convs.size();
  std::optional<SftOutput> out;
  if (hooks.write) out.emplace(rep.output, r.tok, cfg.shard_tokens);
  constexpr size_t kBlock = 8192;  // bounds memory: renderings are written block by block
  const auto whole = static_cast<int64_t>(std::floor(p.upsample));
  std::vector<size_t> kept;  // indices into convs of the samples kept
  int64_t trained_any = 0, rendered_ok = 0;
  std::vector<RenderedSample> rendered;
  std::vector<std::string> errors;
  auto write = [&](const RenderedSample& s, const Conversation& c, int64_t copies) {
    for (int64_t k = 0; k < copies; ++k) {
      if (out) out->add(s, c.file);
      ++rep.documents;
      rep.tokens += static_cast<int64_t>(s.ids.size());
      rep.trained_tokens += s.num_trained();
    }
  };
  auto fit_of = [&](const RenderedSample& s) {
    return fit_conversation(s.trained.data(), static_cast<int64_t>(s.ids.size()), cfg.max_seq_len, cfg.overlength);
  };
  // A sample that fits is written as it is (no copy); a cut one as its pieces. `show` hands the
  // first to inspect.
  auto write_fitted = [&](const RenderedSample& s, const FittedConversation& fit, const Conversation& c,
                          int64_t copies, bool show) {
    if (!fit.cut) {
      if (show && hooks.on_kept) hooks.on_kept(rep.name, c, s);
      return write(s, c, copies);
    }
    const auto pieces = fitted_samples(s, fit);
    if (show && hooks.on_kept) hooks.on_kept(rep.name, c, pieces.front());
    for (const auto& piece : pieces) write(piece, c, copies);
  };
  for (size_t b = 0; b < n; b += kBlock) {
    std::vector<size_t> idx;
    for (size_t i = b; i < std::min(n, b + kBlock); ++i) idx.push_back(i);
    r.run(p.convs, idx, rendered, errors);
    for (size_t j = 0; j < idx.size(); ++j) {
      const Conversation& c = p.convs[idx[j]];
      auto drop = [&](const char* reason) {
        ++rep.dropped[reason];
        if (out) out->skipped(c.file);
      };
      if (!errors[j].empty()) {
        if (p.on_render_error == OnProblem::Error)
          fail("dataset {} (template {}): {}", p.label(), tname, errors[j]);
        drop("render_error");
        continue;
      }
      RenderedSample& s = rendered[j];
      ++rendered_ok;
      const int64_t trained = s.num_trained();
      trained_any += trained;
      if (trained == 0) {
        drop("untrained");
        continue;
      }
      const auto fit = fit_of(s);
      rep.overlength.add(fit);
      if (fit.dropped()) {
        drop("too_long");
        continue;
      }
      kept.push_back(idx[j]);
      write_fitted(s, fit, c, whole, true);
    }
  }
  if (rendered_ok > 0) require_trained_tokens(p.label(), tname, trained_any);
  rep.kept = static_cast<int64_t>(kept.size());
  if (rep.kept == 0) {
    const std::string held =
        rep.heldout.empty()
            ? ""
            : fmt::format("{} held out for eval {{{}}} (holdout), ", rep.heldout_total(), join_counts(rep.heldout));
    fail("dataset {} (template {}): none of its {} samples is left to write ({}dropped: {}); see "
         "holdout, max_seq_len/overlength and the reader's report: {}",
         p.label(), tname, rep.samples_in, held, join_counts(rep.dropped), rep.read.summary());
  }
  // The fractional part of upsample: a seeded subset of the kept samples, written once more. It is
  // rendered again rather than held in memory; rendering is deterministic.
  const double frac = p.upsample - static_cast<double>(whole);
  const auto extra_n = static_cast<size_t>(std::llround(frac * static_cast<double>(kept.size())));
  const auto extra = sft_detail::seeded_subset(kept.size(), extra_n, seed);
  for (size_t b = 0; b < extra.size(); b += kBlock) {
    std::vector<size_t> idx;
    for (size_t i = b; i < std::min(extra.size(), b + kBlock); ++i) idx.push_back(kept[extra[i]]);
    r.run(p.convs, idx, rendered, errors);
    for (size_t j = 0; j < idx.size(); ++j) write_fitted(rendered[j], fit_of(rendered[j]), p.convs[idx[j]], 1, false);
  }
  if (out) rep.manifest = out->finish();
}

// Shortfalls beyond kShortfallWarnShare are warnings even without progress lines: a stage that
// made far fewer samples than asked changes the mixture the config describes.
void log_transforms(const TransformReports& reports, bool progress) {
  for (const auto* t : {&reports.align, &reports.balance, &reports.format_following, &reports.negatives}) {
    if (progress && !t->counts.empty()) log::info("sft prepare: {}", t->summary());
    for (const auto& w : t->shortfall_warnings()) log::warn("sft prepare: {}", w);
  }
}

}  // namespace

SftPrepareReport prepare_sft(const SftPrepareConfig& cfg, const SftPrepareHooks& hooks) {
  const auto t0 = std::chrono::steady_clock::now();
  auto lap = [last = t0]() mutable {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - last).count();
    last = now;
    return s;
  };
  cfg.validate("sft prepare config");
  SftPrepareReport report;
  Tokenizer tok = Tokenizer::load(cfg.tokenizer);
  auto tmpl = make_template(cfg.chat_template, TemplateOptions{cfg.default_system});
  prepare_tokenizer(*tmpl, tok);

  std::vector<Pending> pending;
  std::vector<Conversation> pool;  // conversations of the datasets with transform: true
  for (const auto& d : cfg.datasets) {
    Pending p;
    p.report.name = d.name;
    p.report.output = d.output;
    p.on_render_error = d.policies.bad_record;
    p.upsample = d.upsample;
    p.paths = d.paths;
    p.convs = read_dataset(DatasetSpec{d.name, d.paths, d.format, d.policies}, p.report.read);
    if (auto native = native_tool_calls(d, cfg.chat_template)) to_native_tool_calls(p.convs, *native, p.report.tool_calls);
    p.report.samples_in = static_cast<int64_t>(p.convs.size());
    std::map<std::string, DatasetFormat> formats(p.report.read.files.begin(), p.report.read.files.end());
    auto classify = [&](const Conversation& c) {
      return std::pair{task_of(c, formats.at(c.file)), is_negative(c)};
    };
    write_heldout_file(d.output, hold_out(p.convs, d.holdout, cfg.seed, d.name, classify, p.report.heldout), hooks);
    if (d.max_samples > 0 && p.convs.size() > static_cast<size_t>(d.max_samples)) {
      auto keep = sft_detail::seeded_subset(p.convs.size(), d.max_samples,
                                            sft_detail::stream_seed(cfg.seed, d.name, "max_samples"));
      std::vector<Conversation> subset;
      for (size_t i : keep) subset.push_back(std::move(p.convs[i]));
      p.report.dropped["max_samples"] = static_cast<int64_t>(p.convs.size() - subset.size());
      p.convs = std::move(subset);
    }
    if (d.transform) {
      std::move(p.convs.begin(), p.convs.end(), std::back_inserter(pool));
      p.convs.clear();
    }
    pending.push_back(std::move(p));
  }
  report.read_seconds = lap();

  if (!pool.empty()) {
    std::map<std::string, int64_t> before;
    for (const auto& c : pool) ++before[c.source];
    TransformConfig transforms = cfg.transforms;
    if (!transforms.negatives.pairs_file.empty() && transforms.negatives.enabled) {
      auto more = sft_detail::read_negative_pairs(transforms.negatives.pairs_file);
      transforms.negatives.pairs.insert(transforms.negatives.pairs.end(), more.begin(), more.end());
    }
    pool = apply_transforms(std::move(pool), transforms, report.transforms);
    log_transforms(report.transforms, cfg.progress);
    const auto& ff = cfg.transforms.format_following;
    const auto& neg = cfg.transforms.negatives;
    Pending gen_ff, gen_neg;
    gen_ff.report.name = ff.source;
    gen_ff.report.output = cfg.format_following_output;
    gen_neg.report.name = neg.source;
    gen_neg.report.output = cfg.negatives_output;
    std::map<std::string, Pending*> by_source{{ff.source, &gen_ff}, {neg.source, &gen_neg}};
    for (auto& p : pending) by_source[p.report.name] = &p;
    for (auto& c : pool) {
      auto it = by_source.find(c.source);
      if (it == by_source.end()) fail("transforms returned a conversation of unknown source '{}'", c.source);
      it->second->convs.push_back(std::move(c));
    }
    for (auto& p : pending) {
      const int64_t lost = before[p.report.name] - static_cast<int64_t>(p.convs.size());
      if (before.contains(p.report.name) && lost > 0) p.report.dropped["transforms"] = lost;
    }
    for (Pending* g : {&gen_ff, &gen_neg}) {
      if (g->convs.empty()) continue;
      if (g->report.output.empty())
        fail("transforms made {} '{}' samples but {}_output is not set; set it or disable the stage",
             g->convs.size(), g->report.name, g == &gen_ff ? "format_following" : "negatives");
      g->report.samples_in = static_cast<int64_t>(g->convs.size());
      if (g == &gen_neg) {
        auto negative = [](const Conversation&) { return std::pair{AgentTask::AgentFlan, true}; };
        write_heldout_file(g->report.output, hold_out(g->convs, cfg.negatives_holdout, cfg.seed, g->report.name,
                                                      negative, g->report.heldout), hooks);
      }
      pending.push_back(std::move(*g));
    }
  }

  report.transform_seconds = lap();

  const int threads = cfg.threads > 0 ? cfg.threads : std::max(1u, std::thread::hardware_concurrency());
  const Renderer renderer{*tmpl, tok, threads};
  for (auto& p : pending) {
    prepare_one(p, cfg, renderer, sft_detail::stream_seed(cfg.seed, p.report.name, "upsample"), hooks);
    p.convs = {};
    report.datasets.push_back(std::move(p.report));
    const auto& done = report.datasets.back();
    if (done.overlength.lost_share() > kOverlengthWarnShare || done.overlength.dropped_share() > kOverlengthWarnShare)
      log::warn("sft prepare: dataset {}: {} (overlength {}): more than {:.0f}% lost; raise max_seq_len or try "
                "overlength: window", done.name, done.overlength.describe(cfg.max_seq_len),
                ConfigScalar<Overlength>::format(cfg.overlength), 100 * kOverlengthWarnShare);
    if (cfg.progress) log::info("sft prepare: {}", done.summary_line());
  }
  report.render_seconds = lap();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

int64_t SftDatasetReport::heldout_total() const {
  int64_t n = 0;
  for (const auto& [task, k] : heldout) n += k;
  return n;
}

int64_t SftDatasetReport::records_in() const { return read.records > 0 ? read.records : samples_in; }

std::map<std::string, int64_t> SftDatasetReport::all_dropped() const {
  auto all = read.dropped_records;
  for (const auto& [reason, n] : dropped) all[reason] += n;
  return all;
}

std::string SftDatasetReport::summary_line() const {
  const double share = tokens > 0 ? 100.0 * static_cast<double>(trained_tokens) / static_cast<double>(tokens) : 0;
  const std::string over = overlength.over > 0 ? fmt::format("; max_seq_len: {}", overlength.describe(max_seq_len)) : "";
  const auto drops = all_dropped();
  int64_t n_dropped = 0;
  for (const auto& [reason, n] : drops) n_dropped += n;
  // Printed as an equation so a count that goes missing on the way shows as "!=".
  const int64_t held = heldout_total();
  const std::string held_out = held > 0 ? fmt::format(" + {} held out {{{}}}", held, join_counts(heldout)) : "";
  const std::string in = fmt::format("{} {} {} {} kept{} + {} dropped {{{}}}", records_in(),
                                     read.records > 0 ? "records in" : "generated",
                                     records_in() == kept + held + n_dropped ? "=" : "!=", kept, held_out,
                                     n_dropped, join_counts(drops));
  const std::string turns =
      read.dropped_turns.empty() ? "" : fmt::format(", turns dropped {{{}}}", join_counts(read.dropped_turns));
  return fmt::format("{} -> {}: {}{}{}{}; {} documents, {} tokens, {} trained ({:.1f}%)", name, output.string(), in,
                     turns, tool_calls_line(), over, documents, tokens, trained_tokens, share);
}

std::string SftDatasetReport::tool_calls_line() const {
  if (tool_calls.counts.empty()) return "";
  std::map<std::string, int64_t> text;
  int64_t n_text = 0;
  for (const auto& [key, n] : tool_calls.counts)
    if (key.starts_with("text.")) {
      text[key.substr(5)] = n;
      n_text += n;
    }
  return fmt::format("; tool calls: {} conversations native ({} calls), {} text {{{}}}", tool_calls.get("native"),
                     tool_calls.get("calls"), n_text, join_counts(text));
}

std::string SftPrepareReport::summary() const {
  std::string s;
  for (const auto& d : datasets) {
    s += d.summary_line() + "\n";
    if (!d.tool_calls.notes.empty()) s += d.tool_calls.summary() + "\n";
  }
  for (const auto* t : {&transforms.align, &transforms.balance, &transforms.format_following, &transforms.negatives})
    if (!t->counts.empty()) s += t->summary() + "\n";
  return s + fmt::format("{:.1f} s (read {:.1f}, transforms {:.1f}, render + write {:.1f})\n", seconds,
                         read_seconds, transform_seconds, render_seconds);
}

}  // namespace agenttune
