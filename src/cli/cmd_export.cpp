// agenttune export --checkpoint DIR --out HF_DIR [--dtype bf16]: a training checkpoint (any world
// size) to a Hugging Face folder that transformers and vLLM load directly. Weights stream group by
// group from the rank files into shard files: the whole model is never assembled in memory.
#include <ATen/ATen.h>

#include <chrono>

#include "agenttune/chat/template.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/json_file.h"
#include "agenttune/io/hf_config.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/tokenizer/tokenizer_json.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/log.h"
#include "commands.h"

namespace agenttune::cli {

namespace {
std::vector<TensorPlan> plan_from_layout(const LoadedCheckpoint& ck, c10::ScalarType dtype) {
  std::vector<TensorPlan> plan;
  for (const auto& g : ck.meta.at("layout").at("groups"))
    for (const auto& p : g.at("params")) {
      uint64_t n = 1;
      for (auto d : p.at("shape")) n *= d.get<uint64_t>();
      plan.push_back({p.at("name").get<std::string>(), n * c10::elementSize(dtype)});
    }
  return plan;
}
}  // namespace

Command export_command() {
  struct Args {
    std::string checkpoint, out, dtype = "bfloat16", tokenizer, chat_template;
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
    s->add_option("--template", a->chat_template,
                  "chat template the model was tuned with: written into tokenizer_config.json as chat_template");
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
    cfg.dtype = parse_dtype(a->dtype);
    std::filesystem::create_directories(a->out);
    ShardedSafetensorsWriter writer(a->out, plan_from_layout(ck, cfg.dtype), a->max_shard_mb << 20);
    for_each_checkpoint_tensor(ck, cfg.dtype, [&](const std::string& name, const at::Tensor& t) { writer.add(name, t); });
    auto written = writer.finish();
    write_hf_config(std::filesystem::path(a->out) / "config.json", cfg);
    write_generation_config(a->out, cfg);
    std::string tok = a->tokenizer.empty() ? ck.meta.value("config", nlohmann::json::object()).value("tokenizer", "")
                                           : a->tokenizer;
    if (!tok.empty()) copy_tokenizer_files(tok, a->out);
    if (!a->chat_template.empty()) {
      // transformers' apply_chat_template then renders prompts exactly as training did.
      auto tmpl = make_template(a->chat_template);
      auto cfg_path = std::filesystem::path(a->out) / "tokenizer_config.json";
      auto tc = std::filesystem::exists(cfg_path) ? read_json_file(cfg_path) : nlohmann::json::object();
      tc["chat_template"] = tmpl->jinja();
      // Templates that add tokens (ChatML) trained with them at ids after the base vocabulary;
      // transformers must map the same strings to the same ids.
      auto added = tmpl->added_tokens();
      if (!added.empty()) {
        nlohmann::json ids = nlohmann::json::object(), decoder = nlohmann::json::object();
        const auto model_file = std::filesystem::path(a->out) / "tokenizer.model";
        const bool have_model = std::filesystem::exists(model_file);
        // Training numbered them right after the SentencePiece pieces (prepare_tokenizer).
        const int64_t base = have_model ? Tokenizer::load(model_file).base_vocab_size()
                                        : cfg.vocab_size - static_cast<int64_t>(added.size());
        if (cfg.vocab_size < base + static_cast<int64_t>(added.size()))
          fail("export --template {}: the model has {} embedding rows, but the tokenizer's {} pieces and the "
               "template's {} added tokens need {}; was it trained with this template?",
               a->chat_template, cfg.vocab_size, base, added.size(), base + static_cast<int64_t>(added.size()));
        std::vector<AddedToken> numbered;
        for (size_t i = 0; i < added.size(); ++i) {
          const auto id = static_cast<int32_t>(base + static_cast<int64_t>(i));
          numbered.push_back({added[i], id, true});
          ids[added[i]] = id;
          decoder[std::to_string(id)] = {
              {"content", added[i]}, {"special", true}, {"lstrip", false}, {"rstrip", false},
              {"normalized", false}, {"single_word", false}};
        }
        tc["added_tokens_decoder"] = decoder;
        if (have_model && std::filesystem::exists(std::filesystem::path(a->out) / "tokenizer.json"))
          write_tokenizer_json(model_file, a->out, numbered);
        write_file_atomic(std::filesystem::path(a->out) / "added_tokens.json", ids.dump(2) + "\n");
      }
      write_file_atomic(cfg_path, tc.dump(2) + "\n");
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log::info("exported step {} of {} as {} ({} file(s), {:.1f} MB) to {} in {:.2f}s ({:.0f} MB/s)", ck.step,
              dir.string(), a->dtype, written.files.size(), written.total_bytes / 1e6, a->out, s,
              written.total_bytes / 1e6 / std::max(s, 1e-9));
    return 0;
  };
  return c;
}

}  // namespace agenttune::cli
