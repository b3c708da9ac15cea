// agenttune train --config FILE [--set k=v ...] [--resume auto|PATH]
#include "agenttune/config/load.h"
#include "agenttune/train/train_config.h"
#include "agenttune/train/trainer.h"
#include "agenttune/util/log.h"
#include "commands.h"

namespace agenttune::cli {

Command train_command() {
  struct Args {
    std::string config, resume;
    std::vector<std::string> overrides;
    bool no_progress = false;
    int64_t exit_after = 0;
  };
  auto a = std::make_shared<Args>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("train", "Train from a YAML config: continued pretraining or agent SFT, 1 to N ranks");
    s->add_option("--config", a->config, "YAML config (see configs/tiny/pretrain.yaml)")->required()->check(CLI::ExistingFile);
    s->add_option("--set", a->overrides, "override a config key: a.b=value (repeatable)");
    s->add_option("--resume", a->resume, "auto (newest complete checkpoint, if any) or a checkpoint folder");
    s->add_flag("--no-progress", a->no_progress, "no live progress line");
    s->add_option("--exit-after-steps", a->exit_after,
                  "checkpoint and exit once this many steps are done (the schedule still spans train.max_steps)")
        ->check(CLI::NonNegativeNumber);
    return s;
  };
  c.run = [a] {
    auto cfg = load_config<TrainConfig>(a->config, a->overrides);
    TrainOptions opts;
    opts.resume = a->resume;
    opts.progress = !a->no_progress;
    opts.exit_after_steps = a->exit_after;
    auto r = train(cfg, opts);
    if (r.interrupted) return kInterruptedExitCode;
    log::info("finished at step {}; last checkpoint {}", r.final_step, r.last_checkpoint.string());
    return 0;
  };
  return c;
}

}  // namespace agenttune::cli
