// agenttune generate --model DIR [--adapter DIR] --prompt TEXT: decode from a saved model (with a
// LoRA adapter folder over it) with a KV cache.
#include "agenttune/util/log.h"

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "agenttune/chat/template.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/model/generation.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/error.h"
#include "agenttune/util/strings.h"
#include "commands.h"
#include "decoding.h"

namespace agenttune::cli {

namespace {
struct GenerateArgs {
  std::string model_dir, prompt, prompt_ids, tokenizer, dtype, chat_template, system;
  std::string device = "auto";
  std::string adapter;
  SamplingOptions sampling;
  std::vector<int64_t> stop_ids;
  bool no_bos = false, json = false;
};

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> ids;
  for (auto& part : split(s, ',')) {
    try {
      size_t used = 0;
      ids.push_back(std::stoll(part, &used));
      if (used != part.size()) throw std::invalid_argument(part);
    } catch (const std::exception&) {
      fail("--prompt-ids: '{}' is not an integer (expected comma-separated token ids)", part);
    }
  }
  return ids;
}

int run_generate(GenerateArgs& a) {
  auto loaded = load_decoding_model(a.model_dir, a.dtype, a.device, a.adapter);

  std::optional<Tokenizer> tok;
  const auto tok_path = decoding_tokenizer(a.model_dir, a.tokenizer);
  if (tok_path) tok = Tokenizer::load(*tok_path);

  std::vector<int64_t> prompt;
  if (!a.prompt_ids.empty()) {
    prompt = parse_ids(a.prompt_ids);
  } else {
    if (!tok)
      fail("{}: no tokenizer.json or tokenizer.model to encode --prompt (pass --tokenizer FILE or --prompt-ids)",
           a.model_dir);
    if (!a.chat_template.empty()) {
      // A chat reply: the prompt is one user turn rendered by the template up to the open
      // assistant turn, and generation stops at the template's end-of-turn ids.
      auto tmpl = template_for_model(a.chat_template, *tok, loaded.model->config(), a.model_dir);
      Conversation conv;
      if (!a.system.empty()) conv.turns.push_back({Role::System, a.system, std::nullopt, ""});
      conv.turns.push_back({Role::User, a.prompt, std::nullopt, ""});
      for (int32_t id : tmpl->generation_prompt_ids(conv, *tok)) prompt.push_back(id);
      if (a.stop_ids.empty()) {
        const auto stops = tmpl->stop_ids(*tok);
        a.stop_ids = with_eos_stops({stops.begin(), stops.end()}, loaded.eos_token_ids);
      }
    } else {
      for (int32_t id : tok->encode(a.prompt, !a.no_bos)) prompt.push_back(id);
    }
  }
  a.sampling.stop_ids = a.stop_ids.empty() ? loaded.eos_token_ids : a.stop_ids;
  std::function<void(int64_t)> stream;
  if (!a.json && tok) stream = TextStream(*tok);
  auto res = generate(loaded.model, prompt, a.sampling, stream);
  double tps = res.decode_seconds > 0 ? (res.tokens.size() - 1) / res.decode_seconds : 0.0;
  if (a.json) {
    nlohmann::json j = {{"prompt_ids", prompt}, {"new_ids", res.tokens}, {"stopped", res.stopped}};
    if (tok) {
      std::vector<int32_t> ids(res.tokens.begin(), res.tokens.end());
      j["text"] = tok->decode(ids);
      // The prompt as the template rendered it, so a caller can show exactly what the model saw.
      // Raw --prompt-ids may name rows beyond the tokenizer (a model with spare embeddings): no text then.
      const bool decodable = std::all_of(prompt.begin(), prompt.end(),
                                         [&](auto id) { return id >= 0 && id < tok->vocab_size(); });
      j["prompt_text"] = decodable ? nlohmann::json(tok->decode(std::vector<int32_t>(prompt.begin(), prompt.end())))
                                   : nlohmann::json(nullptr);
    }
    // Replace, not throw: sampled byte-fallback tokens may end inside a UTF-8 sequence.
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << "\n";
  }
  log::info("{} new tokens, prefill {:.3f}s, {:.1f} tokens/s decoding{}", res.tokens.size(),
               res.prefill_seconds, tps, res.stopped ? ", stopped at a stop id" : "");
  return 0;
}
}  // namespace

Command generate_command() {
  auto a = std::make_shared<GenerateArgs>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("generate", "Generate text from a saved model (KV cache)");
    s->add_option("--model", a->model_dir, "Hugging Face or Meta model folder (the base, with --adapter)")
        ->required()
        ->check(CLI::ExistingDirectory);
    auto* p = s->add_option("--prompt", a->prompt, "prompt text (encoded with the model's tokenizer)");
    auto* pi = s->add_option("--prompt-ids", a->prompt_ids, "prompt as comma-separated token ids");
    p->excludes(pi);
    s->add_option("--tokenizer", a->tokenizer,
                  "tokenizer.json, SentencePiece .model or a folder (default: MODEL's tokenizer.json or tokenizer.model)");
    add_sampling_options(s, a->sampling, a->stop_ids);
    s->add_option("--dtype", a->dtype, "float32 | bfloat16 | float16 (default: the checkpoint's)");
    add_adapter_option(s, a->adapter);
    add_device_option(s, a->device);
    s->add_flag("--no-bos", a->no_bos, "do not prepend BOS to the prompt");
    s->add_option("--template", a->chat_template,
                  "chat template (" + template_choices() + "): treat --prompt as a "
                  "user turn and stop at the template's end of turn");
    s->add_option("--system", a->system, "system prompt for --template");
    s->add_flag("--json", a->json, "print {prompt_ids, prompt_text, new_ids, text, stopped} as JSON");
    return s;
  };
  c.run = [a] {
    if (a->prompt.empty() && a->prompt_ids.empty()) fail("generate: give --prompt TEXT or --prompt-ids IDS");
    return run_generate(*a);
  };
  return c;
}

}  // namespace agenttune::cli
