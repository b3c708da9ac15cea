// qwen2.5: Qwen2.5 Instruct's ChatML template (tests/chat/fixtures/qwen2.5-instruct.jinja), without
// tool definitions or structured tool calls.
//
// Text: "<|im_start|>system\n{system}<|im_end|>\n" (Qwen's default sentence, or
// TemplateOptions::default_system, when the conversation has no system turn), then per message
// "<|im_start|>{role}\n{content}<|im_end|>\n" with content as is (this template does not strip);
// tool results as the published template writes them: a run of tool turns is one user turn,
// "<|im_start|>user" + "\n<tool_response>\n{content}\n</tool_response>" per result + "<|im_end|>\n".
// No BOS. The generation prompt ends "<|im_start|>assistant\n".
//
// Ids: <|im_start|>/<|im_end|> by id, each stretch between them as text in one call (a
// "<tool_call>" spelled in content stays text, as every control spelling does). Trained (loss !=
// false assistant messages): content + <|im_end|>; the "\n" after it is never generated (the model
// stops at <|im_end|>) and is not trained.
#include <memory>

#include "agenttune/util/error.h"
#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

constexpr const char* kQwenSystem = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

class QwenTemplate final : public ChatTemplate {
 public:
  explicit QwenTemplate(const TemplateOptions& o) : system_(o.default_system.value_or(kQwenSystem)) {}
  std::string name() const override { return "qwen2.5"; }

  std::vector<int32_t> stop_ids(const Tokenizer& tok) const override {
    auto end = tok.piece_to_id("<|im_end|>");
    if (!end) fail("chat template qwen2.5: the tokenizer has no <|im_end|>; it needs Qwen's tokenizer.json");
    return {*end};
  }

  std::string jinja() const override {
    return "{%- if messages and messages[0]['role'] == 'system' %}"
           "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
           "{%- else %}{{- '<|im_start|>system\\n' + " + chat_detail::jinja_literal(system_) + " + '<|im_end|>\\n' }}{%- endif %}"
           "{%- for message in messages %}"
           "{%- if message['role'] == 'tool' %}"
           "{%- if loop.index0 == 0 or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
           "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
           "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
           "{%- elif not (loop.first and message['role'] == 'system') %}"
           "{{- '<|im_start|>' + message['role'] + '\\n' }}"
           "{%- if message['role'] == 'assistant' and message.get('loss', true) != false %}"
           "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
           "{%- else %}{{- message['content'] + '<|im_end|>' }}{%- endif %}"
           "{{- '\\n' }}"
           "{%- endif %}"
           "{%- endfor %}"
           "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    const auto& turns = conv.turns;
    if (turns.empty() || turns[0].role != Role::System) chat_detail::chatml_turn(r, "system", system_, false, false);
    for (size_t i = 0; i < turns.size(); ++i) {
      const Turn& t = turns[i];
      if (t.role != Role::Tool) {
        chat_detail::chatml_turn(r, role_name(t.role), t.content, trains(t), false);
        continue;
      }
      if (i == 0 || turns[i - 1].role != Role::Tool) {
        r.special("<|im_start|>");
        r.text("user");
      }
      r.text("\n<tool_response>\n" + t.content + "\n</tool_response>");
      if (i + 1 == turns.size() || turns[i + 1].role != Role::Tool) {
        r.special("<|im_end|>");
        r.text("\n");
      }
    }
    if (open) chat_detail::chatml_open(r);
  }

 private:
  std::string system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_qwen_template(const TemplateOptions& o) {
  return std::make_unique<QwenTemplate>(o);
}

}  // namespace agenttune
