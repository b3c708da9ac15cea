#include <algorithm>
#include <cctype>

#include "reader_internal.h"

namespace agenttune::readers {

namespace fs = std::filesystem;

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

[[noreturn]] void refuse_parquet(const fs::path& path) {
  auto out = path;
  out.replace_extension(".jsonl");
  fail(
      "{}: Parquet is not read here; convert it to JSON Lines first, e.g.\n  python -c \"import "
      "pandas as pd; pd.read_parquet('{}').to_json('{}', orient='records', lines=True, "
      "force_ascii=False)\"",
      path.string(), path.string(), out.string());
}

}  // namespace

size_t utf8_error_offset(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = c >= 0xC2 && c <= 0xDF   ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4
                                          : 0;
    if (len == 0 || i + len > n) return i;
    unsigned c1 = p[i + 1];
    if ((c1 & 0xC0) != 0x80) return i;
    // Overlong forms, UTF-16 surrogates and code points above U+10FFFF are not UTF-8.
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0) || (c == 0xF0 && c1 < 0x90) ||
        (c == 0xF4 && c1 >= 0x90))
      return i;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string replace_bad_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 16);
  while (!s.empty()) {
    size_t bad = utf8_error_offset(s);
    if (bad == std::string_view::npos) {
      out.append(s);
      break;
    }
    out.append(s.substr(0, bad));
    out.append(kBadUtf8Marker);
    s.remove_prefix(bad + 1);
  }
  return out;
}

std::string find_marker(const nlohmann::json& v) {
  if (v.is_string())
    return v.get_ref<const std::string&>().find(kBadUtf8Marker) != std::string::npos ? "." : "";
  if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) {
      auto sub = find_marker(v[i]);
      if (!sub.empty()) return "[" + std::to_string(i) + "]" + (sub == "." ? "" : sub);
    }
  } else if (v.is_object()) {
    for (const auto& [key, value] : v.items()) {
      if (key.find(kBadUtf8Marker) != std::string::npos) return "." + key;
      auto sub = find_marker(value);
      if (!sub.empty()) return "." + key + (sub == "." ? "" : sub);
    }
  }
  return "";
}

RecordSource::RecordSource(const fs::path& path) : path_(path) {
  if (!fs::exists(path)) fail("{}: not found", path.string());
  if (lower(path.extension().string()) == ".parquet") refuse_parquet(path);
  if (fs::file_size(path) == 0) fail("{}: empty file, expected JSON records", path.string());
  map_ = MappedFile::open(path);
  text_ = std::string_view(reinterpret_cast<const char*>(map_->data()), map_->size());
  if (text_.substr(0, 4) == "PAR1") refuse_parquet(path);
  if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // a BOM is not JSON, but editors add it
  while (pos_ < text_.size() && is_space(text_[pos_])) {
    if (text_[pos_] == '\n') ++line_;
    ++pos_;
  }
  if (pos_ == text_.size()) fail("{}: only whitespace, expected JSON records", path.string());
  char first = text_[pos_];
  if (first == '[') {
    array_ = true;
    ++pos_;
  } else if (first != '{') {
    fail(
        "{}: line {}: expected a JSON array ('[') or JSON Lines objects ('{{'), found byte "
        "0x{:02x}{}",
        path.string(), line_, static_cast<unsigned char>(first),
        static_cast<unsigned char>(first) == 0x1f ? " (gzip? decompress it first)" : "");
  }
}

bool RecordSource::next(Item& item) {
  if (done_) return false;
  if (!array_) {
    while (pos_ < text_.size()) {
      size_t end = text_.find('\n', pos_);
      if (end == std::string_view::npos) end = text_.size();
      std::string_view line = text_.substr(pos_, end - pos_);
      int64_t line_no = line_++;
      pos_ = end + 1;
      while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
      while (!line.empty() && is_space(line.front())) line.remove_prefix(1);
      if (line.empty()) continue;
      item = Item{index_++, line_no, line};
      return true;
    }
    done_ = true;
    return false;
  }
  auto skip_space = [&] {
    while (pos_ < text_.size() && is_space(text_[pos_])) {
      if (text_[pos_] == '\n') ++line_;
      ++pos_;
    }
  };
  skip_space();
  if (pos_ < text_.size() && text_[pos_] == ']' && index_ == 0) {
    ++pos_;
  } else {
    int64_t line_no = line_;
    std::string_view element = scan_array_element();
    skip_space();
    if (pos_ >= text_.size())
      fail("{}: the JSON array is not closed (after record {})", path_.string(), index_);
    if (text_[pos_] == ',') {
      ++pos_;
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ']')
        fail("{}: line {}: trailing comma after record {}", path_.string(), line_, index_);
    } else if (text_[pos_] == ']') {
      ++pos_;
      done_ = true;
    } else {
      fail("{}: line {}: expected ',' or ']' after record {}", path_.string(), line_, index_);
    }
    item = Item{index_++, line_no, element};
    if (done_) {
      skip_space();
      if (pos_ != text_.size())
        fail("{}: line {}: unexpected text after the JSON array", path_.string(), line_);
    }
    return true;
  }
  done_ = true;
  skip_space();
  if (pos_ != text_.size())
    fail("{}: line {}: unexpected text after the JSON array", path_.string(), line_);
  return false;
}

// Finds where one array element ends without parsing it, so a multi-gigabyte array file
// (toolllama_G123_dfs_train.json) never has to be a single DOM, and a bad element is one record.
std::string_view RecordSource::scan_array_element() {
  size_t start = pos_;
  int depth = 0;
  bool in_string = false;
  for (; pos_ < text_.size(); ++pos_) {
    char c = text_[pos_];
    if (c == '\n') ++line_;
    if (in_string) {
      if (c == '\\') {
        ++pos_;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (depth == 0) break;  // the array's own ']'
      if (--depth == 0) {
        ++pos_;
        break;
      }
    } else if (depth == 0 && (c == ',' || is_space(c))) {
      break;
    }
  }
  if (in_string || depth > 0)
    fail("{}: record {} is cut off: the file ends inside it", path_.string(), index_);
  if (pos_ == start) fail("{}: line {}: empty element in the JSON array", path_.string(), line_);
  return text_.substr(start, pos_ - start);
}

}  // namespace agenttune::readers
