// agenttune chat --model DIR [--adapter DIR] --template NAME: a multi-turn conversation with a saved
// model (with a LoRA adapter folder over it) on stdin/stdout. Each turn renders the whole
// conversation with the chat template (exactly as training rendered it), generates until the
// template's end-of-turn id, and keeps the reply as the assistant turn. Lines "/reset" (forget the
// conversation) and "/exit" are commands.
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "agenttune/chat/template.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "commands.h"
#include "decoding.h"

namespace agenttune::cli {

namespace {

struct ChatArgs {
  std::string model_dir, tokenizer, dtype, chat_template, system;
  std::string device = "auto";
  std::string adapter;
  SamplingOptions sampling;
  std::vector<int64_t> stop_ids;
  bool json = false;
};

// The prompt for the open assistant turn; the oldest exchanges are dropped (system kept) while
// prompt + reply would not fit the model's context. Empty when even the last message alone is
// too long.
std::vector<int64_t> fit_prompt(Conversation& conv, const ChatTemplate& tmpl, const Tokenizer& tok, int64_t context,
                                int64_t reply_budget) {
  for (;;) {
    auto ids = tmpl.generation_prompt_ids(conv, tok);
    if (static_cast<int64_t>(ids.size()) + reply_budget <= context) return {ids.begin(), ids.end()};
    auto first_user = std::find_if(conv.turns.begin(), conv.turns.end(), [](const Turn& t) { return t.role == Role::User; });
    auto next_user = std::find_if(first_user + 1, conv.turns.end(), [](const Turn& t) { return t.role == Role::User; });
    if (next_user == conv.turns.end()) return {};
    log::warn("chat: the conversation no longer fits {} tokens; dropping its oldest exchange", context);
    conv.turns.erase(first_user, next_user);
  }
}

int run_chat(ChatArgs& a) {
  auto loaded = load_decoding_model(a.model_dir, a.dtype, a.device, a.adapter);
  const auto tok_path = decoding_tokenizer(a.model_dir, a.tokenizer);
  if (!tok_path) fail("{}: no tokenizer.json or tokenizer.model (pass --tokenizer FILE)", a.model_dir);
  Tokenizer tok = Tokenizer::load(*tok_path);
  auto tmpl = template_for_model(a.chat_template, tok, loaded.model->config(), a.model_dir);
  if (a.stop_ids.empty()) {
    const auto stops = tmpl->stop_ids(tok);
    a.stop_ids = with_eos_stops({stops.begin(), stops.end()}, loaded.eos_token_ids);
  }
  a.sampling.stop_ids = a.stop_ids;
  const int64_t context = loaded.model->config().max_positions();
  const bool interactive = isatty(STDIN_FILENO) && !a.json;
  if (interactive)
    std::cerr << "chat with " << a.model_dir << " (" << a.chat_template << "); /reset forgets, /exit or Ctrl-D ends\n";

  Conversation conv;
  auto reset = [&] {
    conv.turns.clear();
    if (!a.system.empty()) conv.turns.push_back({Role::System, a.system, std::nullopt, ""});
  };
  reset();
  std::string line;
  for (;;) {
    if (interactive) std::cerr << "\n> " << std::flush;
    if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      reset();
      continue;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    conv.turns.push_back({Role::User, line, std::nullopt, ""});
    auto prompt = fit_prompt(conv, *tmpl, tok, context, a.sampling.max_new_tokens);
    if (prompt.empty()) {
      log::error("chat: that message alone does not fit the model's {} tokens of context; it was not sent", context);
      conv.turns.pop_back();
      continue;
    }
    std::function<void(int64_t)> stream;
    if (!a.json) stream = TextStream(tok);
    auto res = generate(loaded.model, prompt, a.sampling, stream);
    std::vector<int32_t> reply(res.tokens.begin(), res.tokens.end() - (res.stopped ? 1 : 0));
    const std::string text = tok.decode(reply);
    if (a.json) {
      std::cout << nlohmann::json{{"prompt_ids", prompt}, {"new_ids", res.tokens}, {"stopped", res.stopped},
                                  {"text", text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n" << std::flush;
    } else {
      std::cout << "\n" << std::flush;
    }
    conv.turns.push_back({Role::Assistant, text, std::nullopt, ""});
  }
  return 0;
}

}  // namespace

Command chat_command() {
  auto a = std::make_shared<ChatArgs>();
  Command c;
  c.attach_fn = [a](CLI::App& app) {
    auto* s = app.add_subcommand("chat", "Multi-turn chat with a saved model through its chat template (stdin/stdout)");
    s->add_option("--model", a->model_dir, "Hugging Face or Meta model folder")->required()->check(CLI::ExistingDirectory);
    s->add_option("--template", a->chat_template,
                  "chat template the model was tuned with (" + template_choices() + ")")
        ->required();
    s->add_option("--system", a->system, "system prompt (default: the template's own)");
    s->add_option("--tokenizer", a->tokenizer,
                  "tokenizer.json, SentencePiece .model or a folder (default: MODEL's tokenizer.json or tokenizer.model)");
    s->add_option("--dtype", a->dtype, "float32 | bfloat16 | float16 (default: the checkpoint's)");
    add_adapter_option(s, a->adapter);
    add_device_option(s, a->device);
    add_sampling_options(s, a->sampling, a->stop_ids);
    s->add_flag("--json", a->json, "one JSON line per reply: {prompt_ids, new_ids, stopped, text}");
    return s;
  };
  c.run = [a] { return run_chat(*a); };
  return c;
}

}  // namespace agenttune::cli
