// agenttune eval --model DIR [--adapter DIR] --config eval.yaml [--json] [--show-failures N]: the
// agent metrics of a saved model (eval/eval_run.h), printed as a table per task.
#include <iostream>

#include "agenttune/config/load.h"
#include "agenttune/eval/eval_report.h"
#include "agenttune/eval/eval_run.h"
#include "agenttune/util/error.h"
#include "commands.h"
#include "decoding.h"

namespace agenttune::cli {

namespace {

struct EvalArgs {
  std::string model_dir, adapter, config, dtype;
  std::string device = "auto";
  std::vector<std::string> overrides;
  bool json = false;
  int64_t show_failures = 0, show_replies = 0;
};

int run_eval_command(const EvalArgs& a) {
  const auto cfg = load_config<eval::EvalConfig>(a.config, a.overrides);
  auto loaded = load_decoding_model(a.model_dir, a.dtype, a.device, a.adapter);
  const auto inputs =
      eval::load_eval_inputs(cfg, a.model_dir, loaded.model->config().vocab_size, loaded.eos_token_ids);
  auto model = eval::plain_eval_model(loaded.model);
  const auto results = eval::run_eval(*model, inputs);
  if (a.json) {
    // Replace, not throw: a reply may end inside a UTF-8 sequence.
    std::cout << eval::results_json(results, a.show_failures).dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
    return 0;
  }
  std::cout << eval::format_tables(results);
  if (a.show_failures > 0) std::cout << "\n" << eval::format_turns(results, a.show_failures, true);
  if (a.show_replies > 0) std::cout << "\n" << eval::format_turns(results, a.show_replies, false);
  return 0;
}

}  // namespace

Command eval_command() {
  auto a = std::make_shared<EvalArgs>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("eval", "Agent metrics of a saved model: next action per task, hallucination on "
                                         "negatives, held-out loss, multiple choice (docs/eval.md)");
    s->add_option("--model", a->model_dir, "Hugging Face or Meta model folder (the base, with --adapter)")
        ->required()
        ->check(CLI::ExistingDirectory);
    add_adapter_option(s, a->adapter);
    s->add_option("--config", a->config, "eval config (YAML; docs/eval.md)")->required()->check(CLI::ExistingFile);
    s->add_option("--set", a->overrides, "override a config key: a.b=value (repeatable)");
    s->add_option("--dtype", a->dtype, "float32 | bfloat16 | float16 (default: the checkpoint's)");
    add_device_option(s, a->device);
    auto* json = s->add_flag("--json", a->json, "print the results as JSON");
    s->add_option("--show-failures", a->show_failures,
                  "print the first N failed turns: the prompt's last turn, the reply, and reply and gold action with "
                  "the differing span marked ⟦ ⟧")
        ->check(CLI::NonNegativeNumber);
    // The JSON carries failures only: --show-replies there would be a flag that does nothing.
    s->add_option("--show-replies", a->show_replies,
                  "print the first N scored turns, passed or failed, the same way (not with --json)")
        ->check(CLI::NonNegativeNumber)
        ->excludes(json);
    return s;
  };
  c.run = [a] { return run_eval_command(*a); };
  return c;
}

}  // namespace agenttune::cli
