// Text normalisations of the action scorers (docs/eval.md, "Scoring rules").
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "action_internal.h"

namespace agenttune::eval::action_detail {
namespace {

bool space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Calls `emit` for each run of the text: quoted runs ('...', "...", `...`) whole, with their
// quotes, and every other character alone. Shell and SQL both keep quoted text verbatim.
template <class F>
void scan_quoted(std::string_view s, F&& emit) {
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    if (c == '\'' || c == '"' || c == '`') {
      size_t end = s.find(c, i + 1);
      end = end == std::string_view::npos ? s.size() : end + 1;
      emit(s.substr(i, end - i), true);
      i = end;
    } else {
      emit(s.substr(i, 1), false);
      ++i;
    }
  }
}

const std::set<std::string> kSqlKeywords = {
    "SELECT", "FROM",  "WHERE", "AND",    "OR",     "NOT",   "IN",       "IS",     "NULL",
    "LIKE",   "BETWEEN", "GROUP", "BY",   "ORDER",  "HAVING", "LIMIT",   "OFFSET", "AS",
    "ON",     "JOIN",  "LEFT",  "RIGHT",  "INNER",  "OUTER", "FULL",     "CROSS",  "UNION",
    "ALL",    "DISTINCT", "ASC", "DESC",  "INSERT", "INTO",  "VALUES",   "UPDATE", "SET",
    "DELETE", "CASE",  "WHEN",  "THEN",   "ELSE",   "END",   "EXISTS",   "COUNT",  "SUM",
    "AVG",    "MIN",   "MAX"};

bool sql_word_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '$';
}

}  // namespace

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && space(s[b])) ++b;
  while (e > b && space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string collapse_ws(std::string_view s) {
  std::string out;
  bool gap = false;
  for (char c : trim(s)) {
    if (space(c)) {
      gap = true;
      continue;
    }
    if (gap) out += ' ';
    gap = false;
    out += c;
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string_view> lines_of(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    size_t nl = s.find('\n', start);
    std::string_view line = s.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out.push_back(line);
    if (nl == std::string_view::npos) return out;
    start = nl + 1;
  }
}

std::optional<std::string_view> line_after(std::string_view text, std::string_view marker) {
  for (std::string_view line : lines_of(text)) {
    std::string_view l = line.substr(std::min(line.size(), line.find_first_not_of(" \t")));
    if (l.starts_with(marker)) return l.substr(marker.size());
  }
  return std::nullopt;
}

std::vector<std::string> fenced_blocks(std::string_view text, std::string_view lang) {
  const std::string open = fmt::format("```{}\n", lang);
  std::vector<std::string> out;
  for (size_t p = text.find(open); p != std::string_view::npos; p = text.find(open, p)) {
    size_t body = p + open.size();
    // The regex is ```lang\n(.*?)\n``` : the body ends at the first "\n```" after it.
    size_t end = text.find("\n```", body);
    if (end == std::string_view::npos) break;
    out.emplace_back(text.substr(body, end - body));
    p = end + 4;
  }
  return out;
}

std::string canonical_scalar(std::string_view s) {
  s = trim(s);
  std::string t(s);
  char* end = nullptr;
  double v = t.empty() ? 0 : std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || !std::isfinite(v)) return t;
  return fmt::format("{}", v);
}

std::optional<nlohmann::json> parse_json(std::string_view s) {
  auto j = nlohmann::json::parse(trim(s), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

std::string canonical_json(const nlohmann::json& j) {
  if (j.is_number_float()) {
    double v = j.get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9e15)
      return nlohmann::json(static_cast<int64_t>(v)).dump();
    return j.dump();
  }
  if (j.is_number_unsigned()) return nlohmann::json(j.get<uint64_t>()).dump();
  if (j.is_object()) {
    std::string out = "{";
    for (auto it = j.begin(); it != j.end(); ++it)  // nlohmann::json keeps keys sorted
      out += (out.size() > 1 ? "," : "") + nlohmann::json(it.key()).dump() + ":" + canonical_json(it.value());
    return out + "}";
  }
  if (j.is_array()) {
    std::string out = "[";
    for (const auto& e : j) out += (out.size() > 1 ? "," : "") + canonical_json(e);
    return out + "]";
  }
  return j.dump();
}

std::string normalise_bash(std::string_view script) {
  std::string out;
  for (std::string_view line : lines_of(script)) {
    std::string l;
    scan_quoted(trim(line), [&](std::string_view run, bool quoted) {
      if (!quoted && space(run[0])) {
        if (!l.empty() && l.back() != ' ') l += ' ';
      } else {
        l += run;
      }
    });
    while (!l.empty() && (l.back() == ';' || l.back() == ' ')) l.pop_back();
    if (l.empty()) continue;
    out += (out.empty() ? "" : "\n") + l;
  }
  return out;
}

std::string normalise_sql(std::string_view statement) {
  std::string s(trim(statement));
  std::replace(s.begin(), s.end(), '\n', ' ');
  while (!s.empty() && (s.back() == ';' || space(s.back()))) s.pop_back();
  // Tokens: quoted runs, words, single punctuation characters.
  std::vector<std::string> tokens;
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    std::string up = word;
    for (char& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    tokens.push_back(kSqlKeywords.count(up) ? up : word);
    word.clear();
  };
  scan_quoted(s, [&](std::string_view run, bool quoted) {
    if (quoted) {
      flush();
      std::string_view inner = run.size() >= 2 ? run.substr(1, run.size() - 2) : run;
      bool plain_identifier = run[0] == '`' && !inner.empty() &&
                              std::all_of(inner.begin(), inner.end(), sql_word_char);
      tokens.emplace_back(plain_identifier ? inner : run);
    } else if (sql_word_char(run[0])) {
      word += run[0];
    } else {
      flush();
      if (!space(run[0])) tokens.emplace_back(run);
    }
  });
  flush();
  std::string out;
  for (const std::string& t : tokens) {
    bool glue = out.empty() || t == "," || t == ")" || t == "(" || out.back() == '(';
    out += (glue ? "" : " ") + t;
  }
  return out;
}

bool has_react_marker(std::string_view text) {
  static constexpr std::string_view kMarkers[] = {"Thought:", "Action:",  "Action Input:", "Act:",
                                                  "Think:",   "THOUGHT:", "ACTION:",       "Final Answer:"};
  for (std::string_view line : lines_of(text)) {
    line = trim(line);
    for (auto m : kMarkers)
      if (line.starts_with(m)) return true;
  }
  return false;
}

bool is_identifier(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

}  // namespace agenttune::eval::action_detail
