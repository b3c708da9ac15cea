#define PCRE2_CODE_UNIT_WIDTH 8
#include "split_regex.h"

#include <pcre2.h>

#include "agenttune/util/error.h"

namespace agenttune::tokenizer_detail {

namespace {

// Unicode's White_Space property (PropList.txt), as Oniguruma's \s matches it in `tokenizers`.
constexpr std::string_view kWhiteSpace =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

std::string SplitRegex::with_unicode_spaces(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
      } else if (e == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
      } else if (e == 'S') {
        fail("split regex: \\S inside a character class is not supported: {}", pattern);
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

SplitRegex::SplitRegex(const std::string& pattern, const std::string& where) : where_(where) {
  const std::string rewritten = with_unicode_spaces(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                        PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (code_ == nullptr)
    fail("{}: the pre-tokenizer regex does not compile in PCRE2 at offset {}: {} (pattern {})", where, offset,
         pcre2_message(err), pattern);
  // JIT is several times faster; without it (a platform PCRE2 has no JIT for) matching still works.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

SplitRegex::~SplitRegex() { pcre2_code_free(code_); }

SplitRegex::State::State() {
  // One ovector pair is all a split needs; the JIT stack grows to 1 MiB for long runs of one class.
  data_ = pcre2_match_data_create(1, nullptr);
  context_ = pcre2_match_context_create(nullptr);
  stack_ = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
  if (!data_ || !context_ || !stack_) fail("split regex: PCRE2 could not allocate its match state");
  pcre2_jit_stack_assign(context_, nullptr, stack_);
}

SplitRegex::State::~State() {
  pcre2_jit_stack_free(stack_);
  pcre2_match_context_free(context_);
  pcre2_match_data_free(data_);
}

bool SplitRegex::next_match(std::string_view text, size_t from, State& state, size_t& begin, size_t& end) const {
  const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), from,
                             PCRE2_NO_UTF_CHECK, state.data_, state.context_);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) fail("{}: PCRE2 failed on a text of {} bytes: {}", where_, text.size(), pcre2_message(rc));
  const PCRE2_SIZE* v = pcre2_get_ovector_pointer(state.data_);
  begin = v[0];
  end = v[1];
  return true;
}

}  // namespace agenttune::tokenizer_detail
