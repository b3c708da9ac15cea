// agenttune init --config FILE --out DIR: a randomly initialised model of a given shape, saved as
// a Hugging Face folder (tests and the demo start from it).
#include <chrono>

#include "agenttune/config/load.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/model/flops.h"
#include "agenttune/model/init_config.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "commands.h"

namespace agenttune::cli {

namespace {
struct InitArgs {
  std::string config, out;
  std::vector<std::string> overrides;
  uint64_t max_shard_mb = 5 * 1024;
};

int run_init(const InitArgs& a) {
  auto cfg = load_config<InitConfig>(a.config, a.overrides);
  if (!cfg.tokenizer.empty() && !std::filesystem::exists(cfg.tokenizer))
    fail("{}: tokenizer '{}' not found", a.config, cfg.tokenizer.string());
  auto t0 = std::chrono::steady_clock::now();
  auto model = make_llama(cfg.model, cfg.seed);
  const auto t1 = std::chrono::steady_clock::now();
  SaveOptions so;
  so.max_shard_bytes = a.max_shard_mb << 20;
  if (!cfg.tokenizer.empty()) so.tokenizer_from = cfg.tokenizer;
  save_pretrained(model, a.out, so);
  write_resolved_config(std::filesystem::path(a.out) / "agenttune_init.yaml", cfg);
  const auto t2 = std::chrono::steady_clock::now();
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  log::info("initialised {} parameters ({}, seed {}) -> {} in {:.2f}s (initialising {:.2f}s, writing {:.2f}s)",
            count_parameters(cfg.model), dtype_name(cfg.model.dtype), cfg.seed, a.out, secs(t0, t2), secs(t0, t1),
            secs(t1, t2));
  return 0;
}
}  // namespace

Command init_command() {
  auto a = std::make_shared<InitArgs>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("init", "Create a randomly initialised model and save it as a Hugging Face folder");
    s->add_option("--config", a->config, "YAML with a model: section (see configs/tiny/model.yaml)")
        ->required()->check(CLI::ExistingFile);
    s->add_option("--out", a->out, "output folder")->required();
    s->add_option("--set", a->overrides, "override a config key: a.b=value (repeatable)");
    s->add_option("--max-shard-mb", a->max_shard_mb, "largest safetensors shard in MiB")->check(CLI::PositiveNumber);
    return s;
  };
  c.run = [a] { return run_init(*a); };
  return c;
}

}  // namespace agenttune::cli
