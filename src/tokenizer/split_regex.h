#pragma once
// Internal to the tokenizer area: a tokenizer.json pre-tokenizer's Split regex through PCRE2
// (UTF + UCP, JIT), cutting text into pieces the way `tokenizers` does with behaviour "isolated":
// every match is a piece and so is every gap between matches.
//
// The one place PCRE2 and `tokenizers` (Oniguruma) disagree on these patterns is `\s`: PCRE2 10.42
// counts U+180E MONGOLIAN VOWEL SEPARATOR as a space, Oniguruma follows Unicode's White_Space
// property, which dropped it in Unicode 6.3. So `\s` and `\S` are rewritten to that property's
// explicit list before compiling. Letters and numbers (\p{L}, \p{N}) come from PCRE2's Unicode
// tables (Unicode 14 in Debian 12's 10.42): code points assigned after that are not letters here.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

struct pcre2_real_code_8;
struct pcre2_real_match_data_8;
struct pcre2_real_match_context_8;
struct pcre2_real_jit_stack_8;

namespace agenttune::tokenizer_detail {

class SplitRegex {
 public:
  // Throws agenttune::Error naming `where` and PCRE2's message when the pattern does not compile.
  SplitRegex(const std::string& pattern, const std::string& where);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // What one thread needs to match (PCRE2's match data and JIT stack); not shared between threads.
  class State {
   public:
    State();
    ~State();
    State(const State&) = delete;
    State& operator=(const State&) = delete;

   private:
    friend class SplitRegex;
    pcre2_real_match_data_8* data_ = nullptr;
    pcre2_real_match_context_8* context_ = nullptr;
    pcre2_real_jit_stack_8* stack_ = nullptr;
  };

  // Calls piece(std::string_view) for each piece of `text`, which must be valid UTF-8.
  template <typename F>
  void split(std::string_view text, State& state, F&& piece) const {
    size_t done = 0;
    for (size_t at = 0; at < text.size();) {
      size_t begin = 0, end = 0;
      if (!next_match(text, at, state, begin, end)) break;
      if (begin > done) piece(text.substr(done, begin - done));
      if (end > begin) piece(text.substr(begin, end - begin));
      done = end;
      at = end > begin ? end : end + 1;  // an empty match: step past it (no pattern here makes one)
      while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
    }
    if (done < text.size()) piece(text.substr(done));
  }

  // `pattern` with \s and \S spelled as Unicode's White_Space list (see above); public for tests.
  static std::string with_unicode_spaces(const std::string& pattern);

 private:
  bool next_match(std::string_view text, size_t from, State& state, size_t& begin, size_t& end) const;
  pcre2_real_code_8* code_ = nullptr;
  std::string where_;
};

}  // namespace agenttune::tokenizer_detail
