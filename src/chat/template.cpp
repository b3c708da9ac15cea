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
std::unique_ptr<ChatTemplate> make_qwen3_template(bool thinking, const TemplateOptions& o);

int64_t RenderedSample::num_trained() const {
  return std::count(trained.begin(), trained.end(), uint8_t{1});
}

namespace {

// Every rendering passes here first: a template whose format has no place for tool definitions or
// structured calls refuses them, since rendering the rest would train on a conversation that lost
// what the model was supposed to see or say.
void check_tool_fields(const ChatTemplate& tmpl, const Conversation& conv) {
  size_t calls = 0;
  for (size_t i = 0; i < conv.turns.size(); ++i) {
    const Turn& t = conv.turns[i];
    if (!t.tool_calls.empty() && t.role != Role::Assistant)
      fail("chat template {}: {}: turn {} is a {} turn with tool_calls; only assistant turns make calls",
           tmpl.name(), chat_detail::where(conv), i, role_name(t.role));
    calls += t.tool_calls.size();
  }
  if (conv.tools.empty() && calls == 0) return;
  const auto& able = tool_template_names();
  if (std::find(able.begin(), able.end(), tmpl.name()) != able.end()) return;
  fail("chat template {} cannot render tool definitions or structured tool calls, and {} has {} tool definition(s) "
       "and {} call(s); use a template that renders them ({}) or keep the calls as text in the data",
       tmpl.name(), chat_detail::where(conv), conv.tools.size(), calls, fmt::join(able, ", "));
}

}  // namespace

RenderedSample ChatTemplate::render(const Conversation& conv, const Tokenizer& tok) const {
  check_tool_fields(*this, conv);
  chat_detail::Rendering r(name());
  build(conv, false, r);
  return r.encode(tok);
}

std::string ChatTemplate::render_text(const Conversation& conv) const {
  check_tool_fields(*this, conv);
  chat_detail::Rendering r(name());
  build(conv, false, r);
  return r.str();
}

std::string ChatTemplate::generation_prompt(const Conversation& conv) const {
  check_tool_fields(*this, conv);
  chat_detail::Rendering r(name());
  build(conv, true, r);
  return r.str();
}

std::vector<int32_t> ChatTemplate::generation_prompt_ids(const Conversation& conv, const Tokenizer& tok) const {
  check_tool_fields(*this, conv);
  chat_detail::Rendering r(name());
  build(conv, true, r);
  return r.encode(tok).ids;
}

std::vector<int32_t> ChatTemplate::stop_ids(const Tokenizer& tok) const {
  if (tok.eos_id() < 0) fail("chat template {}: the tokenizer has no EOS token </s> to end a reply", name());
  return {tok.eos_id()};
}

const std::vector<std::string>& sentencepiece_template_names() {
  static const std::vector<std::string> names = {"llama-2-chat", "agentlm", "agent-flan",
                                                 "chatml", "toolllama", "vicuna"};
  return names;
}

const std::vector<std::string>& tool_template_names() {
  static const std::vector<std::string> names = {"llama-3", "qwen2.5", "qwen3", "qwen3-no-think"};
  return names;
}

const std::vector<std::string>& template_names() {
  static const std::vector<std::string> names = [] {
    auto all = sentencepiece_template_names();
    for (const char* byte_level : {"llama-3", "qwen2.5", "qwen3", "qwen3-no-think"}) all.push_back(byte_level);
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
  if (name == "qwen3") return make_qwen3_template(true, options);
  if (name == "qwen3-no-think") return make_qwen3_template(false, options);
  std::string near = nearest(name, template_names());
  fail("unknown chat template '{}'{}; valid templates: {}", name,
       near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near), fmt::join(template_names(), ", "));
}

void prepare_tokenizer(const ChatTemplate& tmpl, Tokenizer& tok) {
  // Rendering and generation need the template's BOS and end-of-turn tokens. Checked here, once, so
  // a template paired with another family's tokenizer is one error naming both, not a render error
  // per record (which datasets[].policies.bad_record: drop would turn into counts). The SentencePiece
  // templates all open with <s>; a byte-level tokenizer may have no BOS (Qwen's).
  const auto& bos_templates = sentencepiece_template_names();
  if (tok.bos_id() < 0 && std::find(bos_templates.begin(), bos_templates.end(), tmpl.name()) != bos_templates.end())
    fail("chat template {} opens every conversation with BOS <s>, but tokenizer {} has no BOS token; use a template "
         "of the tokenizer's family", tmpl.name(), tok.model_path().string());
  auto tokens = tmpl.added_tokens();
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t id = tok.add_token(tokens[i]);
    int64_t want = tok.base_vocab_size() + static_cast<int64_t>(i);
    if (id != want)
      fail("chat template {}: token {} got id {} but the template needs {} (the tokenizer already "
           "has other added tokens: {} in all)", tmpl.name(), tokens[i], id, want, tok.added_tokens().size());
  }
  try {
    tmpl.stop_ids(tok);
  } catch (const Error& e) {
    fail("{} (tokenizer {})", e.what(), tok.model_path().string());
  }
}

void require_trained_tokens(const std::string& dataset, const std::string& template_name, int64_t trained) {
  if (trained > 0) return;
  fail("dataset {}: no token is trained under chat template {} (every assistant turn has loss=false, "
       "or there is no assistant turn the template trains); fix the data or pick another template",
       dataset, template_name);
}

}  // namespace agenttune
