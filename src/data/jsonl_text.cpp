#include "jsonl_text.h"

#include <fmt/format.h>

#include "agenttune/util/utf8.h"

namespace agenttune::data {

bool is_blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v') return false;
  return true;
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
