// agenttune export --checkpoint DIR --out HF_DIR [--dtype bf16]: a training checkpoint to a
// Hugging Face folder that transformers and vLLM load directly.
#include <chrono>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "commands.h"

namespace agenttune::cli {

Command export_command() {
  struct Args {
    std::string checkpoint, out, dtype = "bfloat16", tokenizer;
    uint64_t max_shard_mb = 5 * 1024;
  };
  auto a = std::make_shared<Args>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("export", "Write a training checkpoint as a Hugging Face model folder");
    s->add_option("--checkpoint", a->checkpoint, "checkpoint folder (step_NNNNNNNN) or a run's checkpoints/ root")
        ->required()->check(CLI::ExistingDirectory);
    s->add_option("--out", a->out, "output folder")->required();
    s->add_option("--dtype", a->dtype, "float32 | bfloat16 | float16");
    s->add_option("--tokenizer", a->tokenizer, "tokenizer .model or folder to copy (default: the run's)");
    s->add_option("--max-shard-mb", a->max_shard_mb, "largest safetensors shard in MiB")->check(CLI::PositiveNumber);
    return s;
  };
  c.run = [a] {
    auto t0 = std::chrono::steady_clock::now();
    std::filesystem::path dir = a->checkpoint;
    if (!std::filesystem::exists(dir / "meta.json")) {
      auto latest = CheckpointStore(dir, 1).latest();
      if (!latest) fail("{}: neither a checkpoint folder nor a folder holding complete checkpoints", dir.string());
      dir = *latest;
    }
    auto ck = open_checkpoint(dir);
    auto cfg = checkpoint_model_config(ck);
    cfg.dtype = at::kFloat;
    LlamaForCausalLM model(cfg);
    load_checkpoint_weights(ck, model);
    SaveOptions so;
    so.dtype = parse_dtype(a->dtype);
    so.max_shard_bytes = a->max_shard_mb << 20;
    std::string tok = a->tokenizer.empty() ? ck.meta.value("config", nlohmann::json::object()).value("tokenizer", "")
                                           : a->tokenizer;
    if (!tok.empty()) so.tokenizer_from = tok;
    save_pretrained(model, a->out, so);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("exported step {} of {} as {} to {} in {:.2f}s", ck.step, dir.string(), a->dtype, a->out, s);
    return 0;
  };
  return c;
}

}  // namespace agenttune::cli
