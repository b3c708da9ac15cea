#pragma once
// UTF-8: encoding one code point, and finding the first byte of a text that is not valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace agenttune {

// Offset of the first byte that is not valid UTF-8 (overlongs, surrogates and code points past
// U+10FFFF included), or npos.
size_t first_invalid_utf8(std::string_view s);

// Appends one code point (no validation: callers pass scalar values).
inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace agenttune
