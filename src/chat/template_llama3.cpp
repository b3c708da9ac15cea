// llama-3: Meta's Llama-3.1 / 3.3 Instruct chat template (tests/chat/fixtures/llama-3.1-instruct.jinja),
// with tool results; tool definitions and structured tool calls are not part of a Conversation.
//
// Text: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date:
// December 2023\nToday Date: 26 Jul 2024\n\n{system.strip()}<|eot_id|>" (the system block is always
// there, empty system text when the conversation has none), then per message
// "<|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>"; the generation prompt
// ends "<|start_header_id|>assistant<|end_header_id|>\n\n". The date is the published template's own
// default ("26 Jul 2024", what apply_chat_template renders when no date_string is passed); it is
// fixed here because a date that changes per run would make prepared shards differ by day.
//
// Tool turns are what the published template makes of a tool/ipython message whose content is a
// string: "<|start_header_id|>ipython<|end_header_id|>\n\n{content | tojson}<|eot_id|>" (a string is
// "iterable" to Jinja, so the result is written as a JSON string literal, quotes and escapes
// included, as json.dumps(ensure_ascii=False) writes it). Tool definitions and structured
// tool_calls are not rendered: a Conversation carries neither (an assistant turn that calls a tool
// is its text, e.g. '{"name": ..., "parameters": ...}', closed by <|eot_id|> as the template closes
// a call when no builtin tools are defined).
//
// Ids: the header and end tokens by id, each stretch between them as text in one call. Trained
// (loss != false assistant messages): content + <|eot_id|>.
#include <nlohmann/json.hpp>

#include <memory>

#include "agenttune/util/error.h"
#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

constexpr const char* kDateLines = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";

class Llama3Template final : public ChatTemplate {
 public:
  explicit Llama3Template(const TemplateOptions& o) : system_(o.default_system) {}
  std::string name() const override { return "llama-3"; }

  std::vector<int32_t> stop_ids(const Tokenizer& tok) const override {
    std::vector<int32_t> out;
    for (const char* t : {"<|eot_id|>", "<|eom_id|>"}) {
      auto id = tok.piece_to_id(t);
      if (!id) fail("chat template llama-3: the tokenizer has no {}; it needs Llama-3's tokenizer.json", t);
      out.push_back(*id);
    }
    return out;
  }

  std::string jinja() const override {
    const std::string default_system = chat_detail::jinja_literal(system_ ? chat_detail::py_strip(*system_) : "");
    return "{{- bos_token }}"
           "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
           "{%- if messages and messages[0]['role'] == 'system' %}"
           "{%- set system_message = messages[0]['content'] | trim %}{%- set loop_messages = messages[1:] %}"
           "{%- else %}{%- set system_message = " + default_system + " %}{%- set loop_messages = messages %}{%- endif %}"
           "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n' }}"
           "{{- 'Today Date: ' + date_string + '\\n\\n' + system_message + '<|eot_id|>' }}"
           "{%- for message in loop_messages %}"
           "{%- if message['role'] == 'tool' or message['role'] == 'ipython' %}"
           "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message['content'] | tojson + '<|eot_id|>' }}"
           "{%- else %}"
           "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
           "{%- if message['role'] == 'assistant' and message.get('loss', true) != false %}"
           "{% generation %}{{- message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
           "{%- else %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endif %}"
           "{%- endif %}"
           "{%- endfor %}"
           "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    r.special("<|begin_of_text|>");
    size_t first = 0;
    std::string system = system_ ? *system_ : "";
    if (!conv.turns.empty() && conv.turns[0].role == Role::System) system = conv.turns[0].content, first = 1;
    header(r, "system");
    r.text(kDateLines + chat_detail::py_strip(system));
    r.special("<|eot_id|>");
    for (size_t i = first; i < conv.turns.size(); ++i) {
      const Turn& t = conv.turns[i];
      if (t.role == Role::Tool) {
        header(r, "ipython");
        r.text(json_string(t.content, conv));
        r.special("<|eot_id|>");
        continue;
      }
      header(r, role_name(t.role));
      r.text(chat_detail::py_strip(t.content), trains(t));
      r.special("<|eot_id|>", trains(t));
    }
    if (open) header(r, "assistant");
  }

 private:
  // "<|start_header_id|>{role}<|end_header_id|>\n\n" (the "\n\n" opens the next stretch of text).
  static void header(Rendering& r, const std::string& role) {
    r.special("<|start_header_id|>");
    r.text(role);
    r.special("<|end_header_id|>");
    r.text("\n\n");
  }
  // Python's json.dumps(s, ensure_ascii=False), which nlohmann's dump without ASCII escaping equals
  // for valid UTF-8 (the same escapes: \", \\, \b, \f, \n, \r, \t, other controls as \u00xx).
  static std::string json_string(const std::string& s, const Conversation& conv) {
    try {
      return nlohmann::json(s).dump(-1, ' ', false);
    } catch (const nlohmann::json::exception& e) {
      fail("chat template llama-3: {}: a tool turn is not valid UTF-8 ({})", chat_detail::where(conv), e.what());
    }
  }
  std::optional<std::string> system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_llama3_template(const TemplateOptions& o) {
  return std::make_unique<Llama3Template>(o);
}

}  // namespace agenttune
