// agenttune prepare --config FILE: raw corpora (JSONL, text, gz, zst) -> token shards, or, when
// the config lists `datasets:` instead of `corpora:`, chat/agent datasets -> SFT token shards with
// loss masks (read -> Agent-FLAN transforms -> chat template -> shards).
#include "agenttune/config/load.h"
#include "agenttune/data/prepare_config.h"
#include "agenttune/data/prepare.h"
#include "agenttune/data/sft_prepare.h"
#include "agenttune/util/log.h"
#include "agenttune/util/error.h"
#include "commands.h"

namespace agenttune::cli {

Command prepare_command() {
  struct Args {
    std::string config, on_error;
    std::vector<std::string> overrides;
    int threads = -1;
    bool no_progress = false;
  };
  auto a = std::make_shared<Args>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("prepare", "Tokenize raw corpora (corpora:) or chat datasets (datasets:) into token shards");
    s->add_option("--config", a->config, "YAML config (see configs/tiny/prepare.yaml)")->required()->check(CLI::ExistingFile);
    s->add_option("--set", a->overrides, "override a config key: a.b=value (repeatable)");
    s->add_option("--on-error", a->on_error, "fail (default) or skip bad records, counting them")
        ->check(CLI::IsMember(enum_names<OnError>()));
    s->add_option("--threads", a->threads, "tokenizer threads (0 = all cores)")->check(CLI::NonNegativeNumber);
    s->add_flag("--no-progress", a->no_progress, "no live progress line");
    return s;
  };
  c.run = [a] {
    auto overrides = a->overrides;
    if (a->threads >= 0) overrides.push_back("threads=" + std::to_string(a->threads));
    if (config_has_key(a->config, "datasets")) {
      if (!a->on_error.empty())
        fail("--on-error applies to pretraining corpora; SFT datasets set datasets[].policies.bad_record");
      if (a->no_progress) overrides.push_back("progress=false");
      auto report = prepare_sft(load_config<SftPrepareConfig>(a->config, overrides));
      if (a->no_progress) log::info("{}", report.summary());  // otherwise already logged per dataset
      return 0;
    }
    if (!a->on_error.empty()) overrides.push_back("on_error=" + a->on_error);
    auto cfg = load_config<PrepareConfig>(a->config, overrides);
    for (const auto& corpus : cfg.corpora) {
      PrepareOptions o;
      o.name = corpus.name;
      for (const auto& in : corpus.inputs) o.inputs.push_back(in.string());
      o.output_dir = corpus.output;
      o.tokenizer = cfg.tokenizer;
      o.text_field = corpus.text_field;
      o.add_bos = cfg.add_bos;
      o.add_eos = cfg.add_eos;
      o.shard_tokens = cfg.shard_tokens;
      o.threads = cfg.threads;
      o.on_error = cfg.on_error;
      o.progress = !a->no_progress;
      auto r = prepare_corpus(o);
      log::info("{}: {} documents, {} tokens in {} shard(s) -> {} ({:.1f} MB in {:.2f}s, {:.1f} MB/s){}",
                corpus.name, r.manifest.documents, r.manifest.tokens, r.manifest.shards.size(),
                corpus.output.string(), r.input_bytes / 1e6, r.seconds, r.input_bytes / 1e6 / std::max(r.seconds, 1e-9),
                r.empty_documents ? fmt::format(", {} empty skipped", r.empty_documents) : "");
      if (r.bad_records > 0) {
        log::warn("{}: skipped {} bad records; first: {}", corpus.name, r.bad_records,
                  r.first_errors.empty() ? "" : r.first_errors.front());
        for (size_t i = 1; i < r.first_errors.size(); ++i) log::warn("  {}", r.first_errors[i]);
      }
    }
    return 0;
  };
  return c;
}

}  // namespace agenttune::cli
