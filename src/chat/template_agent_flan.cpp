// agent-flan: lagent's LLAMA2_AGENT_META roles (recipes.md §2.3, §2.6).
//
// Text: "<s>" then per turn
//   user/system/tool: "<|Human|>െ{content}\n "
//   assistant:        "<|Assistant|>െ{content}ി\n "
// with U+0D46 "െ" (Llama-2 id 30840) opening every turn and U+0D3F "ി" (id 30387) closing assistant
// turns; "ി" is the stop id. Contents are not stripped (lagent does not strip).
//
// Ids: everything after BOS is one stretch, encoded in one SentencePiece call: what lagent's prompt
// gives at inference, and what transformers gives for the whole string. This equals encoding per
// segment and splicing at the markers, because the markers never merge: the only Llama-2 pieces
// containing U+0D46/U+0D3F are those single characters, so every marker is exactly one token in any
// context (the golden tests pin 30840/30387 at each turn boundary). What does merge is the turn end
// with the next header: "\n <|Human|>" gives <0x0A>, "▁<", ... -- both sides are untrained, so the
// mask is unaffected. Trained: assistant content + "ി" for turns with loss != false; the
// "<|Assistant|>െ" header and the "\n " after "ി" are not.
#include <memory>

#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

// U+0D46 (id 30840) opens every turn; U+0D3F (id 30387) closes assistant turns.
constexpr const char* kHuman = "<|Human|>\u0d46";
constexpr const char* kBot = "<|Assistant|>\u0d46";
constexpr const char* kClose = "\u0d3f";

class AgentFlanTemplate final : public ChatTemplate {
 public:
  explicit AgentFlanTemplate(const TemplateOptions& o) : system_(o.default_system) {}
  std::string name() const override { return "agent-flan"; }

  std::vector<int32_t> stop_ids(const Tokenizer& tok) const override {
    auto ids = ChatTemplate::stop_ids(tok);  // EOS (an error without one)
    if (auto id = tok.piece_to_id(kClose)) ids.insert(ids.begin(), *id);
    return ids;
  }

  std::string jinja() const override {
    const std::string human = kHuman, bot = kBot;
    std::string sys = system_
        ? "{%- if not messages or messages[0]['role'] != 'system' -%}{{ '" + human + "' + " +
              chat_detail::jinja_literal(*system_) + " + '\\n ' }}{%- endif -%}"
        : "";
    return "{{ bos_token }}" + sys +
           "{%- for message in messages -%}"
           "{%- if message['role'] == 'assistant' -%}{{ '" + bot + "' }}"
           "{%- if message.get('loss', true) != false -%}"
           "{% generation %}{{ message['content'] + '" + kClose + "' }}{% endgeneration %}"
           "{%- else -%}{{ message['content'] + '" + kClose + "' }}{%- endif -%}{{ '\\n ' }}"
           "{%- else -%}{{ '" + human + "' + message['content'] + '\\n ' }}{%- endif -%}"
           "{%- endfor -%}"
           "{%- if add_generation_prompt -%}{{ '" + bot + "' }}{%- endif -%}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    r.special("<s>");
    if (system_ && (conv.turns.empty() || conv.turns[0].role != Role::System))
      r.text(kHuman + *system_ + "\n ");
    for (const Turn& t : conv.turns) {
      if (t.role == Role::Assistant) {
        r.text(kBot);
        r.text(t.content + kClose, trains(t));
        r.text("\n ");
      } else {
        r.text(kHuman + t.content + "\n ");
      }
    }
    if (open) r.text(kBot);
  }

 private:
  std::optional<std::string> system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_agent_flan_template(const TemplateOptions& o) {
  return std::make_unique<AgentFlanTemplate>(o);
}

}  // namespace agenttune
