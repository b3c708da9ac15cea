// llama-2-chat (Meta's reference format) and agentlm (the same with AgentTuning's fixed system
// prompt when the conversation brings none). recipes.md §2.1, §2.2, §2.6.
//
// Text: each finished pair is "<s>[INST] {user.strip()} [/INST] {assistant.strip()} </s>"; a leading
// system turn is folded into the first user message as "<<SYS>>\n{system}\n<</SYS>>\n\n{user}" before
// the strip (as Meta does, so the system text itself is not stripped). Tool turns count as user
// turns (AgentInstruct observations are user turns already). Roles must alternate user/assistant.
//
// Ids: BOS and EOS are inserted by id, and each "[INST] ... [/INST] answer " stretch is encoded in one
// SentencePiece call as text, which is exactly Meta's per-pair `sp.encode` (a "<s>" or "[INST]"
// inside content stays text there too) and transformers' tokenization of the whole string when
// the content spells no "<s>"/"</s>". Trained: " {answer} " and the EOS closing the pair, for
// assistant turns with loss != false. The answer's leading space rides on its first token ("▁Sure"),
// so no token straddles the prompt/answer boundary.
#include <memory>

#include "agenttune/util/error.h"
#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

constexpr const char* kAgentLMSystem = "You are a helpful, respectful and honest assistant.";

class Llama2Template final : public ChatTemplate {
 public:
  Llama2Template(bool agentlm, const TemplateOptions& o) : agentlm_(agentlm) {
    if (o.default_system) system_ = o.default_system;
    else if (agentlm) system_ = kAgentLMSystem;
  }
  std::string name() const override { return agentlm_ ? "agentlm" : "llama-2-chat"; }

  std::string jinja() const override {
    std::string def = system_ ? chat_detail::jinja_literal(*system_) : "none";
    return
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}{%- set system = " + def + " -%}{%- set loop_messages = messages -%}{%- endif -%}"
        "{%- for message in loop_messages -%}"
        "{%- if message['role'] == 'system' -%}"
        "{{ raise_exception('" + name() + ": only a leading system message is supported') }}"
        "{%- endif -%}"
        "{%- if (message['role'] == 'assistant') != (loop.index0 % 2 == 1) -%}"
        "{{ raise_exception('" + name() + ": roles must alternate user/assistant') }}"
        "{%- endif -%}"
        "{%- if message['role'] == 'assistant' -%}"
        "{%- if message.get('loss', true) != false -%}"
        "{% generation %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endgeneration %}"
        "{%- else -%}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{%- endif -%}"
        "{%- else -%}"
        "{%- if loop.first and system is not none -%}"
        "{%- set content = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content'] -%}"
        "{%- else -%}{%- set content = message['content'] -%}{%- endif -%}"
        "{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}"
        "{%- endif -%}"
        "{%- endfor -%}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    const auto& turns = conv.turns;
    size_t i = 0;
    std::optional<std::string> system = system_;
    if (!turns.empty() && turns[0].role == Role::System) system = turns[i++].content;
    bool first = true, want_assistant = false;
    for (; i < turns.size(); ++i) {
      const Turn& t = turns[i];
      if (t.role == Role::System)
        fail("{}: {} has a system turn at position {}; {} supports only a leading one",
             chat_detail::where(conv), name(), i, name());
      bool assistant = t.role == Role::Assistant;
      if (assistant != want_assistant)
        fail("{}: {} needs alternating user/assistant turns, but turn {} is {}", chat_detail::where(conv),
             name(), i, role_name(t.role));
      if (assistant) {
        bool tr = trains(t);
        r.text(" " + chat_detail::py_strip(t.content) + " ", tr);
        r.special("</s>", tr);
      } else {
        std::string content = t.content;
        if (first && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
        r.special("<s>");
        r.text("[INST] " + chat_detail::py_strip(content) + " [/INST]");
      }
      first = false;
      want_assistant = !want_assistant;
    }
    // The prompt "<s>[INST] ... [/INST]" already ends where the answer starts.
    if (open && !want_assistant)
      fail("{}: a {} generation prompt needs a conversation that ends with a user turn",
           chat_detail::where(conv), name());
  }

 private:
  bool agentlm_;
  std::optional<std::string> system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_llama2_template(bool agentlm, const TemplateOptions& o) {
  return std::make_unique<Llama2Template>(agentlm, o);
}

}  // namespace agenttune
