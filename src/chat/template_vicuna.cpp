// vicuna: FastChat's vicuna_v1.1 (SeparatorStyle.ADD_COLON_TWO, sep " ", sep2 "</s>"; recipes.md §2.5),
// the ShareGPT default.
//
// Text: "<s>{system} " then "USER: {content} " for user/tool turns and "ASSISTANT: {content}</s>" for
// assistant turns; the generation prompt ends "ASSISTANT:". The system is the conversation's leading
// system turn, else the fixed Vicuna sentence. Contents are not stripped (FastChat does not).
//
// Ids: one SentencePiece call per stretch between BOS/EOS ids, i.e. the whole string. Trained: for
// assistant turns with loss != false, " {content}" and its EOS; the space after "ASSISTANT:" rides on
// the answer's first token ("▁Sure"), which FastChat's train.py also trains (its "-2" offset), while
// "ASSISTANT:" itself is not trained.
#include <memory>

#include "agenttune/util/error.h"
#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

constexpr const char* kVicunaSystem =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.";

class VicunaTemplate final : public ChatTemplate {
 public:
  explicit VicunaTemplate(const TemplateOptions& o) : system_(o.default_system.value_or(kVicunaSystem)) {}
  std::string name() const override { return "vicuna"; }

  std::string jinja() const override {
    return "{%- if messages and messages[0]['role'] == 'system' -%}"
           "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
           "{%- else -%}{%- set system = " + chat_detail::jinja_literal(system_) +
           " -%}{%- set loop_messages = messages -%}{%- endif -%}"
           "{{ bos_token + system + ' ' }}"
           "{%- for message in loop_messages -%}"
           "{%- if message['role'] == 'system' -%}"
           "{{ raise_exception('vicuna: only a leading system message is supported') }}"
           "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT:' }}"
           "{%- if message.get('loss', true) != false -%}"
           "{% generation %}{{ ' ' + message['content'] + eos_token }}{% endgeneration %}"
           "{%- else -%}{{ ' ' + message['content'] + eos_token }}{%- endif -%}"
           "{%- else -%}{{ 'USER: ' + message['content'] + ' ' }}{%- endif -%}"
           "{%- endfor -%}"
           "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    const auto& turns = conv.turns;
    size_t i = 0;
    std::string system = system_;
    if (!turns.empty() && turns[0].role == Role::System) system = turns[i++].content;
    r.special("<s>");
    r.text(system + " ");
    for (; i < turns.size(); ++i) {
      const Turn& t = turns[i];
      if (t.role == Role::System)
        fail("{}: vicuna supports only a leading system turn, found one at position {}",
             chat_detail::where(conv), i);
      if (t.role == Role::Assistant) {
        bool tr = trains(t);
        r.text("ASSISTANT:");
        r.text(" " + t.content, tr);
        r.special("</s>", tr);
      } else {
        r.text("USER: " + t.content + " ");
      }
    }
    if (open) r.text("ASSISTANT:");
  }

 private:
  std::string system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_vicuna_template(const TemplateOptions& o) {
  return std::make_unique<VicunaTemplate>(o);
}

}  // namespace agenttune
