#pragma once
// Internal to src/chat: the segment list every template builds, and the helpers the templates
// share (Python-compatible strip, Jinja string literals, error locations).
#include <string>
#include <string_view>
#include <vector>

#include "agenttune/chat/template.h"

namespace agenttune::chat_detail {

class Rendering {
 public:
  explicit Rendering(std::string template_name) : template_(std::move(template_name)) {}
  // Text that is tokenized together with its neighbours up to the next special token.
  void text(std::string_view s, bool trained = false);
  // A special token by its string form ("<s>", "</s>", "<|im_start|>"), inserted by id.
  void special(std::string_view token, bool trained = false);

  std::string str() const;
  RenderedSample encode(const Tokenizer& tok) const;

 private:
  struct Part {
    std::string text;
    bool trained;
    bool special;
  };
  std::string template_;
  std::vector<Part> parts_;
};

// ChatML's "<|im_start|>{role}\n{content}<|im_end|>\n" (chatml, qwen2.5): `trained` covers the content
// and <|im_end|>, and the "\n" after it when `newline_trained` (Lemur's rendering trains it, Qwen's
// mask stops at <|im_end|>, where generation stops).
void chatml_turn(Rendering& r, std::string_view role, std::string_view content, bool trained, bool newline_trained);
// The open assistant turn a ChatML generation prompt ends with: "<|im_start|>assistant\n".
void chatml_open(Rendering& r);

// Python's str.strip() (what Meta's code, Lemur's train.py and Jinja's |trim use): strips the
// characters for which str.isspace() is true, Unicode ones (U+00A0, U+3000, ...) included.
std::string py_strip(std::string_view s);

// A single-quoted Jinja string literal for `s`.
std::string jinja_literal(std::string_view s);

// "source record N (id X)" for error messages.
std::string where(const Conversation& conv);

}  // namespace agenttune::chat_detail
