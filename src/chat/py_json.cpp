#include "py_json.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>
#include <set>
#include <vector>

#include "agenttune/util/error.h"

namespace agenttune::chat_detail {

namespace {

// Python's float repr: the shortest digits that round-trip (what std::to_chars gives too), written
// positionally when the decimal exponent is in [-4, 16) and as d.ddde±XX otherwise.
std::string py_float(double v) {
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s.erase(0, 1);
  }
  const size_t e_at = s.find('e');
  const int exp = std::stoi(s.substr(e_at + 1));
  std::string digits = s.substr(0, e_at);
  if (digits.size() > 1) digits.erase(1, 1);  // the '.'
  if (exp < -4 || exp >= 16) {
    std::string mant = digits.size() > 1 ? digits.substr(0, 1) + "." + digits.substr(1) : digits;
    std::string e = std::to_string(std::abs(exp));
    if (e.size() < 2) e = "0" + e;
    return sign + mant + "e" + (exp < 0 ? "-" : "+") + e;
  }
  if (exp < 0) return sign + "0." + std::string(-exp - 1, '0') + digits;
  if (digits.size() <= static_cast<size_t>(exp) + 1) return sign + digits + std::string(exp + 1 - digits.size(), '0') + ".0";
  return sign + digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
}

void py_string(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// Streams nlohmann's SAX events into Python's layout, so key order is the text's own.
class PyWriter final : public nlohmann::json_sax<nlohmann::json> {
 public:
  PyWriter(int indent, std::string_view what) : indent_(indent), what_(what) {}
  std::string out;

  bool null() override { return value("null"); }
  bool boolean(bool v) override { return value(v ? "true" : "false"); }
  bool number_integer(number_integer_t v) override { return value(std::to_string(v)); }
  bool number_unsigned(number_unsigned_t v) override { return value(std::to_string(v)); }
  bool number_float(number_float_t v, const string_t& lexeme) override {
    // An integer too large for 64 bits arrives here; Python keeps it an exact int.
    if (lexeme.find_first_of(".eE") == std::string::npos) return value(lexeme);
    return value(py_float(v));
  }
  bool string(string_t& v) override {
    item();
    py_string(out, v);
    return true;
  }
  bool binary(binary_t&) override { return false; }
  bool start_object(std::size_t) override { return open('{', true); }
  bool end_object() override { return close('}'); }
  bool start_array(std::size_t) override { return open('[', false); }
  bool end_array() override { return close(']'); }
  bool key(string_t& k) override {
    Level& l = levels_.back();
    if (!l.keys.insert(k).second) fail("{}: duplicate key \"{}\" in a JSON object", what_, k);
    separator(l);
    py_string(out, k);
    out += ": ";
    l.after_key = true;
    return true;
  }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& e) override {
    fail("{}: not valid JSON at byte {}: {}", what_, pos, e.what());
  }

 private:
  struct Level {
    bool object;
    size_t count = 0;
    bool after_key = false;
    std::set<std::string> keys;
  };

  void newline(size_t depth) {
    out += '\n';
    out.append(depth * static_cast<size_t>(indent_), ' ');
  }
  void separator(Level& l) {
    if (l.count++ > 0) out += indent_ < 0 ? ", " : ",";
    if (indent_ >= 0) newline(levels_.size());
  }
  // Before a value: the separator when it is an array element (object values follow their key).
  void item() {
    if (levels_.empty()) return;
    Level& l = levels_.back();
    if (l.object) {
      l.after_key = false;
      return;
    }
    separator(l);
  }
  bool value(const std::string& v) {
    item();
    out += v;
    return true;
  }
  bool open(char c, bool object) {
    item();
    out += c;
    levels_.push_back({object});
    return true;
  }
  bool close(char c) {
    const bool any = levels_.back().count > 0;
    levels_.pop_back();
    if (any && indent_ >= 0) newline(levels_.size());
    out += c;
    return true;
  }

  int indent_;
  std::string_view what_;
  std::vector<Level> levels_;
};

}  // namespace

std::string py_tojson(std::string_view json_text, int indent, std::string_view what) {
  PyWriter w(indent, what);
  const auto first = json_text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || json_text[first] != '{')
    fail("{}: expected a JSON object, got {:?}", what, std::string(json_text.substr(0, 80)));
  nlohmann::json::sax_parse(json_text.data(), json_text.data() + json_text.size(), &w);
  return w.out;
}

}  // namespace agenttune::chat_detail
