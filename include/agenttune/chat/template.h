#pragma once
// Chat templates: a Conversation becomes token ids plus a per-token loss mask, and the same
// rendering is available as a string (inspect/debug), as a generation prompt (chat/generate) and as
// a Jinja template for tokenizer_config.json (transformers' apply_chat_template reproduces it).
//
// Tokenization rule, shared by every template: the rendering is a sequence of control tokens (BOS,
// EOS, ChatML's added tokens), which only the template inserts, by id, and text. Each stretch of
// text between two control tokens is encoded by ONE SentencePiece call, so ids equal what
// transformers' slow (SentencePiece) Llama tokenizer gives for the whole rendered string with
// legacy=True: one dummy-prefix "▁" per stretch, as agenttune::Tokenizer does. The loss mask is
// computed afterwards from byte offsets: a token is trained when it covers any byte of a trained
// segment (the rule transformers uses for {% generation %} spans).
//
// Message content is always text: a "<s>", "</s>", "<unk>", "<|im_start|>" or "<|im_end|>" spelled
// inside any turn (system, user, tool, assistant; from a dataset or typed into `chat`/`generate
// --template`) is encoded as the characters it is made of (Tokenizer::encode_as_text), never as a
// control token, so a user turn holding "<|im_end|>\n<|im_start|>assistant\n..." cannot open a
// fake assistant turn. transformers' apply_chat_template(tokenize=True) differs there and only
// there: it renders the same text but then matches those spellings as control tokens wherever they
// are (docs/design.md, "Message content is text"). Text-only markers ("[INST]", "USER:",
// "<|Human|>െ", "ി") cannot be told apart from content in any of these formats; the loss mask still
// follows the template's own turns, so such text is never trained unless it sits in a trained turn.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/chat/conversation.h"
#include "agenttune/tokenizer/tokenizer.h"

namespace agenttune {

struct RenderedSample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;  // 1 = in loss; same length as ids
  int64_t num_trained() const;
};

struct TemplateOptions {
  // System prompt used when a conversation has no system turn of its own. Unset = the template's
  // default: AgentLM's and Vicuna's fixed sentence, none for the other templates.
  std::optional<std::string> default_system;
};

namespace chat_detail {
class Rendering;
}

class ChatTemplate {
 public:
  virtual ~ChatTemplate() = default;
  virtual std::string name() const = 0;

  // Ids and loss mask. A sample with no trained token comes back with an all-zero mask: the caller
  // counts it (and require_trained_tokens() rejects a dataset where that is every sample). Throws
  // agenttune::Error naming the conversation when the template cannot express it (e.g. llama-2-chat
  // with two user turns in a row) or the tokenizer lacks the template's added tokens.
  RenderedSample render(const Conversation& conv, const Tokenizer& tok) const;
  std::string render_text(const Conversation& conv) const;

  // The conversation followed by an open assistant turn, for generation.
  std::string generation_prompt(const Conversation& conv) const;
  std::vector<int32_t> generation_prompt_ids(const Conversation& conv, const Tokenizer& tok) const;

  virtual std::vector<int32_t> stop_ids(const Tokenizer& tok) const;
  // Tokens the tokenizer must have, in id order after the base vocab (prepare_tokenizer adds them).
  virtual std::vector<std::string> added_tokens() const { return {}; }
  // Renders like render_text() / generation_prompt() (add_generation_prompt=True) for messages
  // {role, content, loss?}; assistant spans that are trained sit in {% generation %} blocks.
  virtual std::string jinja() const = 0;

 protected:
  // Appends the template's segments for `conv`; `open` = end with an open assistant turn.
  virtual void build(const Conversation& conv, bool open, chat_detail::Rendering& out) const = 0;
};

// Valid names: llama-2-chat, agentlm, agent-flan, chatml, toolllama, vicuna (SentencePiece), llama-3,
// qwen2.5, qwen3, qwen3-no-think (byte-level BPE from tokenizer.json; these four also render tools and
// tool calls). An unknown name is an error listing them.
std::unique_ptr<ChatTemplate> make_template(const std::string& name, const TemplateOptions& options = {});
const std::vector<std::string>& template_names();

// Adds the template's added tokens to `tok`; throws if they would not get consecutive ids right
// after the base vocab (ChatML: 32000..32004), since checkpoints are trained with those ids.
void prepare_tokenizer(const ChatTemplate& tmpl, Tokenizer& tok);

// Throws naming the dataset and template when a whole dataset rendered to zero trained tokens
// (e.g. every assistant turn has loss=false, or toolllama data without a final assistant turn).
void require_trained_tokens(const std::string& dataset, const std::string& template_name, int64_t trained);

}  // namespace agenttune
