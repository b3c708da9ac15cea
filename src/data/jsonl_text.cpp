#include "jsonl_text.h"

#include <fmt/format.h>

namespace agenttune::data {

bool is_blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v') return false;
  return true;
}

size_t first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // bounds of the second byte (overlongs, surrogates, > U+10FFFF)
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return i;
    if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (i + k >= n || (p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

namespace {

// The top-level key whose value holds byte `at` of a JSON object, or "" (a key itself, or outside
// any value). Only used to word an error, so a rough scan is enough.
std::string key_holding(std::string_view s, size_t at) {
  int depth = 0;
  bool want_key = false;
  std::string key;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"') {
      size_t j = i + 1;
      while (j < s.size() && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
      const bool is_key = depth == 1 && want_key;
      if (at >= i && at <= j) return is_key || depth < 1 ? "" : key;
      if (is_key) key = std::string(s.substr(i + 1, j - i - 1)), want_key = false;
      i = j;
    } else if (c == '{' || c == '[') {
      if (++depth == 1) want_key = c == '{';
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' && depth == 1) {
      want_key = true;
    }
    if (i >= at) return depth >= 1 ? key : "";
  }
  return "";
}

}  // namespace

RecordStatus JsonlTextExtractor::extract(std::string_view line, std::string_view& text, std::string& error) {
  if (is_blank(line)) return RecordStatus::Blank;
  simdjson::dom::element doc;
  auto err = parser_.parse(line.data(), line.size(), false).get(doc);
  if (err == simdjson::UTF8_ERROR) {
    const size_t at = first_invalid_utf8(line);
    const std::string key = key_holding(line, at);
    error = key.empty() ? fmt::format("invalid UTF-8 at byte {}", at)
                        : fmt::format("field '{}': invalid UTF-8 at byte {}", key, at);
    return RecordStatus::Bad;
  }
  if (err) {
    error = fmt::format("malformed JSON: {}", simdjson::error_message(err));
    return RecordStatus::Bad;
  }
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) {
    error = "not a JSON object";
    return RecordStatus::Bad;
  }
  simdjson::dom::element value;
  if (obj.at_key(field_).get(value)) {
    error = fmt::format("field '{}': missing", field_);
    return RecordStatus::Bad;
  }
  if (value.get_string().get(text)) {
    error = fmt::format("field '{}': not a string", field_);
    return RecordStatus::Bad;
  }
  return is_blank(text) ? RecordStatus::Empty : RecordStatus::Ok;
}

RecordStatus check_text(std::string_view text, std::string& error) {
  if (!simdjson::validate_utf8(text.data(), text.size())) {
    error = fmt::format("invalid UTF-8 at byte {}", first_invalid_utf8(text));
    return RecordStatus::Bad;
  }
  return is_blank(text) ? RecordStatus::Empty : RecordStatus::Ok;
}

}  // namespace agenttune::data
