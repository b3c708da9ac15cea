// agenttune export --checkpoint DIR --out HF_DIR [--dtype bf16] [--verify ours|transformers|none]
// [--adapter-only]: a training checkpoint (any world size) to a Hugging Face folder that
// transformers and vLLM load directly, verified before it is published (train/export.h). An adapter
// run (LoRA, QLoRA) exports its adapters merged into the base, or with --adapter-only as a PEFT
// adapter folder.
#include <chrono>

#include "agenttune/model/llama_config.h"
#include "agenttune/train/export.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "commands.h"

namespace agenttune::cli {

namespace {
const char* what_was_exported(ExportKind k) {
  switch (k) {
    case ExportKind::Model: return "a model";
    case ExportKind::MergedAdapters: return "a model with the adapters merged into the base";
    case ExportKind::AdapterFolder: return "a PEFT adapter folder";
  }
  return "";
}
}  // namespace

Command export_command() {
  struct Args {
    std::string checkpoint, out, dtype, tokenizer, chat_template, verify = "ours", python;
    uint64_t max_shard_mb = 5 * 1024;
    bool adapter_only = false;
    CLI::Option* max_shard_option = nullptr;
  };
  auto a = std::make_shared<Args>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("export", "Write a training checkpoint as a Hugging Face model folder, verified");
    s->add_option("--checkpoint", a->checkpoint, "checkpoint folder (step_NNNNNNNN) or a run's checkpoints/ root")
        ->required()->check(CLI::ExistingDirectory);
    s->add_option("--out", a->out, "output folder (an existing export there is replaced only once the new one is verified)")
        ->required();
    s->add_option("--dtype", a->dtype,
                  "float32 | bfloat16 | float16 (default bfloat16 for a model, float32 for --adapter-only as PEFT saves)");
    s->add_flag("--adapter-only", a->adapter_only,
                "a LoRA/QLoRA run: write only the adapter, as a PEFT folder (adapter_config.json, "
                "adapter_model.safetensors) that peft and vLLM load over the base; without it the adapters are "
                "merged into the base and a full model is written");
    s->add_option("--tokenizer", a->tokenizer,
                  "tokenizer to copy: a SentencePiece .model, a byte-level BPE tokenizer.json or a folder (default: "
                  "the run's)");
    a->max_shard_option =
        s->add_option("--max-shard-mb", a->max_shard_mb, "largest safetensors shard in MiB")->check(CLI::PositiveNumber);
    s->add_option("--template", a->chat_template,
                  "chat template the model was tuned with: written into tokenizer_config.json as chat_template");
    s->add_option("--verify", a->verify,
                  "ours (default): reload with our loader, every tensor must equal the checkpoint's rounded to --dtype "
                  "and the probe logits must match; transformers: also load it in transformers (logits and tokenizer "
                  "ids; an adapter folder in transformers + peft over the base); none: skip (needs no float32 copy "
                  "of the model in memory)")
        ->check(CLI::IsMember(enum_names<ExportVerify>()));
    s->add_option("--python", a->python, "Python with transformers for --verify transformers (default: the checkout's .venv)");
    return s;
  };
  c.run = [a] {
    auto t0 = std::chrono::steady_clock::now();
    ExportOptions o;
    o.checkpoint = a->checkpoint;
    o.out = a->out;
    if (!a->dtype.empty()) o.dtype = parse_dtype(a->dtype);
    o.adapter_only = a->adapter_only;
    if (a->adapter_only && a->max_shard_option->count() > 0)
      fail("--max-shard-mb: an adapter folder is a single adapter_model.safetensors (the only file PEFT and vLLM "
           "read); drop it with --adapter-only");
    o.tokenizer = a->tokenizer;
    o.chat_template = a->chat_template;
    o.max_shard_bytes = a->max_shard_mb << 20;
    o.verify = parse_export_verify(a->verify);
    o.python = a->python;
    auto r = export_checkpoint(o);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("exported step {} of {} as {} in {} ({} file(s), {:.1f} MB) to {} in {:.2f}s{}", r.step,
              r.checkpoint_dir.string(), what_was_exported(r.kind), dtype_name(r.dtype), r.files, r.bytes / 1e6,
              a->out, s,
              r.check ? "" : " (not verified: --verify none)");
    return 0;
  };
  return c;
}

}  // namespace agenttune::cli
