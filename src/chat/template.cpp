#include "agenttune/chat/template.h"
#include "agenttune/chat/template_tokenizers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "agenttune/util/error.h"
#include "agenttune/util/strings.h"
#include "rendering.h"

namespace agenttune {

// Defined in the per-family files (template_<family>.cpp).
std::unique_ptr<ChatTemplate> make_llama2_template(bool agentlm, const TemplateOptions& o);
std::unique_ptr<ChatTemplate> make_agent_flan_template(const TemplateOptions& o);
std::unique_ptr<ChatTemplate> make_chatml_template(const TemplateOptions& o);
std::unique_ptr<ChatTemplate> make_toolllama_template(const TemplateOptions& o);
std::unique_ptr<ChatTemplate> make_vicuna_template(const TemplateOptions& o);
std::unique_ptr<ChatTemplate> make_llama3_template(const TemplateOptions& o);
std::unique_ptr<ChatTemplate> make_qwen_template(const TemplateOptions& o);

int64_t RenderedSample::num_trained() const {
  return std::count(trained.begin(), trained.end(), uint8_t{1});
}

RenderedSample ChatTemplate::render(const Conversation& conv, const Tokenizer& tok) const {
  chat_detail::Rendering r(name());
  build(conv, false, r);
  return r.encode(tok);
}

std::string ChatTemplate::render_text(const Conversation& conv) const {
  chat_detail::Rendering r(name());
  build(conv, false, r);
  return r.str();
}

std::string ChatTemplate::generation_prompt(const Conversation& conv) const {
  chat_detail::Rendering r(name());
  build(conv, true, r);
  return r.str();
}

std::vector<int32_t> ChatTemplate::generation_prompt_ids(const Conversation& conv, const Tokenizer& tok) const {
  chat_detail::Rendering r(name());
  build(conv, true, r);
  return r.encode(tok).ids;
}

std::vector<int32_t> ChatTemplate::stop_ids(const Tokenizer& tok) const { return {tok.eos_id()}; }

const std::vector<std::string>& sentencepiece_template_names() {
  static const std::vector<std::string> names = {"llama-2-chat", "agentlm", "agent-flan",
                                                 "chatml", "toolllama", "vicuna"};
  return names;
}

const std::vector<std::string>& template_names() {
  static const std::vector<std::string> names = [] {
    auto all = sentencepiece_template_names();
    for (const char* byte_level : {"llama-3", "qwen2.5"}) all.push_back(byte_level);
    return all;
  }();
  return names;
}

std::unique_ptr<ChatTemplate> make_template(const std::string& name, const TemplateOptions& options) {
  if (name == "llama-2-chat") return make_llama2_template(false, options);
  if (name == "agentlm") return make_llama2_template(true, options);
  if (name == "agent-flan") return make_agent_flan_template(options);
  if (name == "chatml") return make_chatml_template(options);
  if (name == "toolllama") return make_toolllama_template(options);
  if (name == "vicuna") return make_vicuna_template(options);
  if (name == "llama-3") return make_llama3_template(options);
  if (name == "qwen2.5") return make_qwen_template(options);
  std::string near = nearest(name, template_names());
  fail("unknown chat template '{}'{}; valid templates: {}", name,
       near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near), fmt::join(template_names(), ", "));
}

void prepare_tokenizer(const ChatTemplate& tmpl, Tokenizer& tok) {
  auto tokens = tmpl.added_tokens();
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t id = tok.add_token(tokens[i]);
    int64_t want = tok.base_vocab_size() + static_cast<int64_t>(i);
    if (id != want)
      fail("chat template {}: token {} got id {} but the template needs {} (the tokenizer already "
           "has other added tokens: {} in all)", tmpl.name(), tokens[i], id, want, tok.added_tokens().size());
  }
}

void require_trained_tokens(const std::string& dataset, const std::string& template_name, int64_t trained) {
  if (trained > 0) return;
  fail("dataset {}: no token is trained under chat template {} (every assistant turn has loss=false, "
       "or there is no assistant turn the template trains); fix the data or pick another template",
       dataset, template_name);
}

}  // namespace agenttune
