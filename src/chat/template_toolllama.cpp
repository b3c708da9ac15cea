// toolllama: ToolBench's "tool-llama-single-round" (SeparatorStyle.ONLY_LAST_ASSISTANT; recipes.md
// §2.5, §2.6).
//
// Text: "<s>" then "{Role}: {content}" per message, Role in System/User/Function/Assistant (tool turns
// are Function), each followed by "\n" except the last, which is followed by "</s>". Contents are
// not stripped. The generation prompt puts "\n" after every message and ends with "Assistant:".
//
// Ids: one SentencePiece call for everything between BOS and the final EOS, i.e. the whole string.
// Trained: only the final message when it is an assistant turn with loss != false: " {content}" and
// the EOS. The space after "Assistant:" is trained, as in ToolBench's train.py (its "-2" offset keeps
// the token after the colon in the loss); the "Assistant:" header itself is not. Each "Step N"
// sample trains one step, so earlier assistant turns are never trained.
#include <memory>

#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

const char* label(Role r) {
  switch (r) {
    case Role::System: return "System";
    case Role::User: return "User";
    case Role::Tool: return "Function";
    case Role::Assistant: return "Assistant";
  }
  return "User";
}

class ToolLlamaTemplate final : public ChatTemplate {
 public:
  explicit ToolLlamaTemplate(const TemplateOptions& o) : system_(o.default_system) {}
  std::string name() const override { return "toolllama"; }

  std::string jinja() const override {
    std::string sys = system_
        ? "{%- if not messages or messages[0]['role'] != 'system' -%}{{ 'System: ' + " +
              chat_detail::jinja_literal(*system_) + " + '\\n' }}{%- endif -%}"
        : "";
    return "{{ bos_token }}" + sys +
           "{%- set labels = {'system': 'System', 'user': 'User', 'tool': 'Function', 'assistant': 'Assistant'} -%}"
           "{%- for message in messages -%}"
           "{%- set label = labels[message['role']] -%}"
           "{%- if loop.last and not add_generation_prompt -%}"
           "{%- if message['role'] == 'assistant' and message.get('loss', true) != false -%}"
           "{{ label + ':' }}{% generation %}{{ ' ' + message['content'] + eos_token }}{% endgeneration %}"
           "{%- else -%}{{ label + ': ' + message['content'] + eos_token }}{%- endif -%}"
           "{%- else -%}{{ label + ': ' + message['content'] + '\\n' }}{%- endif -%}"
           "{%- endfor -%}"
           "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    r.special("<s>");
    if (system_ && (conv.turns.empty() || conv.turns[0].role != Role::System))
      r.text("System: " + *system_ + "\n");
    for (size_t i = 0; i < conv.turns.size(); ++i) {
      const Turn& t = conv.turns[i];
      if (i + 1 == conv.turns.size() && !open) {
        bool tr = trains(t);
        r.text(std::string(label(t.role)) + ":");
        r.text(" " + t.content, tr);
        r.special("</s>", tr);
      } else {
        r.text(std::string(label(t.role)) + ": " + t.content + "\n");
      }
    }
    if (open) r.text("Assistant:");
  }

 private:
  std::optional<std::string> system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_toolllama_template(const TemplateOptions& o) {
  return std::make_unique<ToolLlamaTemplate>(o);
}

}  // namespace agenttune
