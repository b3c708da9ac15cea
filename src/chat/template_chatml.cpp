// chatml: Lemur-70B-Chat (recipes.md §2.4, §2.6; xchat/train/train.py).
//
// Text: "<s>" then per message "<|im_start|>{role}\n{content.strip()}<|im_end|>\n" with the role name
// as in the data (system/user/assistant/tool); the generation prompt ends "<|im_start|>assistant\n".
// Added tokens <pad>, <|im_start|>, <|im_end|>, <|im_sep|>, <|diff_marker|> = 32000..32004.
//
// Ids: BOS and the added tokens by id; each stretch between them ("user\n{content}", "\n") in one
// SentencePiece call, as text, i.e. transformers' legacy tokenization of the whole string except
// that a "<|im_end|>" spelled inside content stays text (Lemur's train.py, tokenizing the whole
// string with transformers, would match it and so let data forge turns). So the "\n" after
// <|im_end|> is [▁, <0x0A>] = [29871, 13] (dummy prefix per stretch), and "assistant\n" is
// [▁assistant, <0x0A>]. The header/content boundary always falls after the <0x0A> byte token, so
// no token straddles it. Trained (loss != false assistant messages): content + <|im_end|> + "\n";
// BOS, every other message and the "<|im_start|>assistant\n" header are not. No EOS is appended.
#include <memory>

#include "agenttune/util/error.h"
#include "rendering.h"

namespace agenttune {

namespace {

using chat_detail::Rendering;

class ChatMLTemplate final : public ChatTemplate {
 public:
  explicit ChatMLTemplate(const TemplateOptions& o) : system_(o.default_system) {}
  std::string name() const override { return "chatml"; }

  std::vector<std::string> added_tokens() const override {
    return {"<pad>", "<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|diff_marker|>"};
  }

  // FastChat's Lemur stop ids: <|im_end|> and 0.
  std::vector<int32_t> stop_ids(const Tokenizer& tok) const override {
    auto end = tok.piece_to_id("<|im_end|>");
    if (!end) fail("chat template chatml: the tokenizer has no <|im_end|>; add the template's tokens first (prepare_tokenizer)");
    return {*end, 0};
  }

  std::string jinja() const override {
    std::string sys = system_
        ? "{%- if not messages or messages[0]['role'] != 'system' -%}{{ '<|im_start|>system\\n' + " +
              chat_detail::jinja_literal(chat_detail::py_strip(*system_)) + " + '<|im_end|>\\n' }}{%- endif -%}"
        : "";
    return "{{ bos_token }}" + sys +
           "{%- for message in messages -%}"
           "{{ '<|im_start|>' + message['role'] + '\\n' }}"
           "{%- if message['role'] == 'assistant' and message.get('loss', true) != false -%}"
           "{% generation %}{{ message['content'] | trim + '<|im_end|>\\n' }}{% endgeneration %}"
           "{%- else -%}{{ message['content'] | trim + '<|im_end|>\\n' }}{%- endif -%}"
           "{%- endfor -%}"
           "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}";
  }

 protected:
  void build(const Conversation& conv, bool open, Rendering& r) const override {
    r.special("<s>");
    if (system_ && (conv.turns.empty() || conv.turns[0].role != Role::System))
      chat_detail::chatml_turn(r, "system", chat_detail::py_strip(*system_), false, true);
    for (const Turn& t : conv.turns)
      chat_detail::chatml_turn(r, role_name(t.role), chat_detail::py_strip(t.content), trains(t), true);
    if (open) chat_detail::chatml_open(r);
  }

 private:
  std::optional<std::string> system_;
};

}  // namespace

std::unique_ptr<ChatTemplate> make_chatml_template(const TemplateOptions& o) {
  return std::make_unique<ChatMLTemplate>(o);
}

}  // namespace agenttune
