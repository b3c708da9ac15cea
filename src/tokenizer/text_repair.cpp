#include "text_repair.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "agenttune/util/error.h"
#include "agenttune/util/utf8.h"

namespace agenttune::tokenizer_detail {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the invalid subpart at s[0]: the bytes that still begin a valid sequence, at least one.
size_t invalid_subpart(std::string_view s) {
  const auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned c = at(0);
  size_t len = 0;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 1;
  if (s.size() < 2 || at(1) < lo || at(1) > hi) return 1;
  size_t k = 2;
  while (k < len && k < s.size() && (at(k) & 0xC0) == 0x80) ++k;
  return k;
}

// Whether the character can be the second half of a canonical pair (some have class 0, as Tamil's
// AA sign). utf8proc >= 2.9 says so in a comb_issecond bit; before, comb_index >= 0x8000 marked it.
// Read through whichever the installed header has: on 2.9 the old test compiles too (comb_index is
// a 10-bit field there) but is always false, and NFC would be skipped for these pairs unnoticed.
template <class P>
auto second_of_pair(const P* p, int) -> decltype(static_cast<bool>(p->comb_issecond)) {
  return p->comb_issecond;
}
template <class P>
bool second_of_pair(const P* p, long) {
  return p->comb_index != UINT16_MAX && p->comb_index >= 0x8000;
}

// True when the character may change under NFC or change what precedes it: a nonzero combining
// class, a canonical decomposition or composition exclusion, the second half of a canonical pair,
// or a Hangul vowel or trailing jamo (composed by arithmetic, outside utf8proc's tables).
bool may_compose(utf8proc_int32_t cp) {
  if ((cp >= 0x1161 && cp <= 0x1175) || (cp >= 0x11A8 && cp <= 0x11C2)) return true;
  const utf8proc_property_t* p = utf8proc_get_property(cp);
  return p->combining_class != 0 || p->comp_exclusion || (p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0) ||
         second_of_pair(p, 0);
}

}  // namespace

void append_utf8_lossy(std::string_view s, std::string& out) {
  while (!s.empty()) {
    const size_t bad = first_invalid_utf8(s);
    if (bad == std::string_view::npos) {
      out += s;
      return;
    }
    out += s.substr(0, bad);
    out += kReplacement;
    s.remove_prefix(bad + invalid_subpart(s.substr(bad)));
  }
}

bool nfc_if_needed(std::string_view s, std::string& out) {
  // Below U+0300 (lead bytes < 0xCC) no character changes; most text needs no more than this scan.
  bool maybe = false;
  for (size_t i = 0; i < s.size() && !maybe;) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0xCC) {
      i += c < 0x80 ? 1 : 2;
      continue;
    }
    utf8proc_int32_t cp = 0;
    const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                    static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
    if (n <= 0) fail("NFC: invalid UTF-8 at byte {} (the text is repaired before this)", i);
    maybe = may_compose(cp);
    i += static_cast<size_t>(n);
  }
  if (!maybe) return false;
  utf8proc_uint8_t* composed = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                              &composed, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(composed, &std::free);
  if (n < 0) fail("NFC (utf8proc) failed on a text of {} bytes: {}", s.size(), utf8proc_errmsg(n));
  out.assign(reinterpret_cast<const char*>(composed), static_cast<size_t>(n));
  return true;
}

}  // namespace agenttune::tokenizer_detail
