// agenttune export --checkpoint DIR --out HF_DIR [--dtype bf16] [--verify ours|transformers|none]:
// a training checkpoint (any world size) to a Hugging Face folder that transformers and vLLM load
// directly, verified before it is published (train/export.h).
#include <chrono>

#include "agenttune/model/llama_config.h"
#include "agenttune/train/export.h"
#include "agenttune/util/log.h"
#include "commands.h"

namespace agenttune::cli {

Command export_command() {
  struct Args {
    std::string checkpoint, out, dtype = "bfloat16", tokenizer, chat_template, verify = "ours", python;
    uint64_t max_shard_mb = 5 * 1024;
  };
  auto a = std::make_shared<Args>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("export", "Write a training checkpoint as a Hugging Face model folder, verified");
    s->add_option("--checkpoint", a->checkpoint, "checkpoint folder (step_NNNNNNNN) or a run's checkpoints/ root")
        ->required()->check(CLI::ExistingDirectory);
    s->add_option("--out", a->out, "output folder (an existing export there is replaced only once the new one is verified)")
        ->required();
    s->add_option("--dtype", a->dtype, "float32 | bfloat16 | float16");
    s->add_option("--tokenizer", a->tokenizer, "tokenizer .model or folder to copy (default: the run's)");
    s->add_option("--max-shard-mb", a->max_shard_mb, "largest safetensors shard in MiB")->check(CLI::PositiveNumber);
    s->add_option("--template", a->chat_template,
                  "chat template the model was tuned with: written into tokenizer_config.json as chat_template");
    s->add_option("--verify", a->verify,
                  "ours (default): reload with our loader, every tensor must equal the checkpoint's rounded to --dtype "
                  "and the probe logits must match; transformers: also load it in transformers (logits and tokenizer "
                  "ids); none: skip (needs no float32 copy of the model in memory)")
        ->check(CLI::IsMember(enum_names<ExportVerify>()));
    s->add_option("--python", a->python, "Python with transformers for --verify transformers (default: the checkout's .venv)");
    return s;
  };
  c.run = [a] {
    auto t0 = std::chrono::steady_clock::now();
    ExportOptions o;
    o.checkpoint = a->checkpoint;
    o.out = a->out;
    o.dtype = parse_dtype(a->dtype);
    o.tokenizer = a->tokenizer;
    o.chat_template = a->chat_template;
    o.max_shard_bytes = a->max_shard_mb << 20;
    o.verify = parse_export_verify(a->verify);
    o.python = a->python;
    auto r = export_checkpoint(o);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("exported step {} of {} as {} ({} file(s), {:.1f} MB) to {} in {:.2f}s{}", r.step,
              r.checkpoint_dir.string(), a->dtype, r.files, r.bytes / 1e6, a->out, s,
              r.check ? "" : " (not verified: --verify none)");
    return 0;
  };
  return c;
}

}  // namespace agenttune::cli
