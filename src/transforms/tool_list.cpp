#include "agenttune/transforms/tool_list.h"

#include <cctype>
#include <cstdlib>

#include "agenttune/util/utf8.h"
#include "internal.h"

namespace agenttune {
namespace {

using nlohmann::json;

// Recursive descent over Python's repr grammar; a failure anywhere makes the whole value fail.
// `Json` is nlohmann::json or, where the key order must survive, nlohmann::ordered_json.
template <class Json>
class LiteralParser {
 public:
  explicit LiteralParser(std::string_view s) : s_(s) {}
  size_t pos() const { return i_; }

  std::optional<Json> value(int depth = 0) {
    if (depth > 64) return std::nullopt;
    skip_ws();
    if (i_ >= s_.size()) return std::nullopt;
    char c = s_[i_];
    if (c == '{') return dict(depth);
    if (c == '[') return sequence(']', depth);
    if (c == '(') return sequence(')', depth);
    if (c == '\'' || c == '"') return string();
    if (c == '-' || c == '+' || c == '.' || std::isdigit(static_cast<unsigned char>(c))) return number();
    for (auto [word, v] : {std::pair<std::string_view, Json>{"True", true}, {"False", false},
                           {"None", nullptr}})
      if (s_.substr(i_).starts_with(word)) {
        i_ += word.size();
        return v;
      }
    return std::nullopt;
  }

 private:
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(char c) {
    skip_ws();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }

  std::optional<Json> dict(int depth) {
    ++i_;
    Json out = Json::object();
    if (eat('}')) return out;
    do {
      if (eat('}')) return out;  // trailing comma
      auto key = value(depth + 1);
      if (!key || !eat(':')) return std::nullopt;
      auto v = value(depth + 1);
      if (!v) return std::nullopt;
      out[key->is_string() ? key->template get<std::string>() : key->dump()] = std::move(*v);
    } while (eat(','));
    return eat('}') ? std::optional<Json>(std::move(out)) : std::nullopt;
  }

  std::optional<Json> sequence(char close, int depth) {
    ++i_;
    Json out = Json::array();
    if (eat(close)) return out;
    do {
      if (eat(close)) return out;
      auto v = value(depth + 1);
      if (!v) return std::nullopt;
      out.push_back(std::move(*v));
    } while (eat(','));
    return eat(close) ? std::optional<Json>(std::move(out)) : std::nullopt;
  }

  std::optional<uint32_t> hex(size_t digits) {
    if (i_ + digits > s_.size()) return std::nullopt;
    uint32_t v = 0;
    for (size_t k = 0; k < digits; ++k) {
      char c = s_[i_++];
      if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
      v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
  }

  std::optional<Json> string() {
    char quote = s_[i_++];
    std::string out;
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == quote) return Json(std::move(out));
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) return std::nullopt;
      char e = s_[i_++];
      std::optional<uint32_t> cp;
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': case '\'': case '"': out += e; break;
        case 'x': if (!(cp = hex(2))) return std::nullopt; append_utf8(out, *cp); break;
        case 'u': if (!(cp = hex(4))) return std::nullopt; append_utf8(out, *cp); break;
        case 'U': if (!(cp = hex(8))) return std::nullopt; append_utf8(out, *cp); break;
        default: out += '\\'; out += e;  // Python keeps unknown escapes verbatim
      }
    }
    return std::nullopt;  // unterminated
  }

  std::optional<Json> number() {
    size_t b = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) ||
                              s_[i_] == '.' || s_[i_] == '-' || s_[i_] == '+'))
      ++i_;
    std::string t(s_.substr(b, i_ - b));
    char* end = nullptr;
    if (t.find_first_of(".eE") == std::string::npos) {
      long long v = std::strtoll(t.c_str(), &end, 10);
      if (end == t.c_str() + t.size()) return Json(v);
    }
    double d = std::strtod(t.c_str(), &end);
    if (t.empty() || end != t.c_str() + t.size()) return std::nullopt;
    return Json(d);
  }

  std::string_view s_;
  size_t i_ = 0;
};

std::optional<ListedTool> tool_of(const json& entry) {
  if (!entry.is_object()) return std::nullopt;
  auto name = entry.find("name");
  if (name == entry.end() || !name->is_string() || name->get<std::string>().empty()) return std::nullopt;
  ListedTool t{name->get<std::string>(), {}};
  if (auto d = entry.find("description"); d != entry.end() && d->is_string())
    t.description = std::string(transforms_detail::trim(d->get<std::string>()));
  return t;
}

}  // namespace

std::optional<json> parse_python_literal(std::string_view text, size_t* consumed) {
  LiteralParser<json> p(text);
  auto v = p.value();
  if (v && consumed) *consumed = p.pos();
  return v;
}

std::optional<nlohmann::ordered_json> parse_python_literal_ordered(std::string_view text) {
  return LiteralParser<nlohmann::ordered_json>(text).value();
}

ToolList parse_toolbench_tools(std::string_view prompt) {
  static constexpr std::string_view kMarker = "you have access to the following APIs:";
  ToolList out;
  size_t m = prompt.find(kMarker);
  if (m == std::string_view::npos) return out;
  std::string_view list = prompt.substr(m + kMarker.size());
  if (auto all = parse_python_literal(list); all && all->is_array()) {
    out.status = ToolListStatus::Parsed;
    for (const auto& e : *all)
      if (auto t = tool_of(e)) out.tools.push_back(std::move(*t));
    return out;
  }
  // A list cut short or holding one malformed entry still names most tools: parse each
  // "{'name'" entry on its own.
  // After a good entry, skip past it so the {'name': ...} of its own parameters is not taken
  // for a tool.
  for (size_t p = list.find("{'name'"); p != std::string_view::npos;) {
    size_t used = 0;
    auto e = parse_python_literal(list.substr(p), &used);
    if (e)
      if (auto t = tool_of(*e)) out.tools.push_back(std::move(*t));
    p = list.find("{'name'", p + (e ? used : 1));
  }
  out.status = out.tools.empty() ? ToolListStatus::Failed : ToolListStatus::Partial;
  return out;
}

std::string render_tool_list(const std::vector<ListedTool>& tools, std::string_view header) {
  std::string s(header);
  for (const auto& t : tools) {
    s += "\n- " + t.name;
    if (!t.description.empty()) s += ": " + t.description;
  }
  return s;
}

}  // namespace agenttune
