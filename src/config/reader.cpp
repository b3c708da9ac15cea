#include "agenttune/config/reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <cmath>
#include <set>

#include "agenttune/util/error.h"
#include "agenttune/util/strings.h"

namespace agenttune {

namespace config_detail {

// YAML 1.2 core-schema numbers, parsed strictly: the whole text must be the number, so
// "64abc" or "1.5" for an integer field is an error rather than a silent truncation.
std::optional<int64_t> parse_int(std::string_view s) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<uint64_t> parse_uint(std::string_view s) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_double(std::string_view s) {
  bool neg = !s.empty() && s[0] == '-';
  std::string_view body = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? s.substr(1) : s;
  if (body == ".inf" || body == ".Inf" || body == ".INF")
    return neg ? -HUGE_VAL : HUGE_VAL;
  if (body == ".nan" || body == ".NaN" || body == ".NAN") return std::nan("");
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<bool> parse_bool(std::string_view s) {
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return std::nullopt;
}

// Shortest text that reads back to the same value, always recognisably a float.
template <class F>
std::string format_floating(F v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  std::string s = fmt::format("{}", v);
  // YAML 1.1 readers (PyYAML) take "1e-05" and "10000" for a string and an int; "1.0e-05" and
  // "10000.0" are floats to every reader.
  if (s.find('.') == std::string::npos) {
    size_t e = s.find('e');
    s.insert(e == std::string::npos ? s.size() : e, ".0");
  }
  return s;
}
std::string format_double(double v) { return format_floating(v); }
std::string format_double(float v) { return format_floating(v); }

}  // namespace config_detail

ConfigReader::ConfigReader(const ConfigSource& source, YAML::Node map, std::string path)
    : source_(source), map_(std::move(map)), path_(std::move(path)) {}

std::string ConfigReader::child_path(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

YAML::Node ConfigReader::take(std::string_view key) {
  known_.emplace_back(key);
  if (!map_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  // Iterating (rather than map_[key]) never inserts into the tree.
  for (auto it = map_.begin(); it != map_.end(); ++it)
    if (it->first.IsScalar() && it->first.Scalar() == key) return it->second;
  return YAML::Node(YAML::NodeType::Undefined);
}

void ConfigReader::finish() const {
  if (!map_.IsMap()) return;
  std::set<std::string> seen;
  for (auto it = map_.begin(); it != map_.end(); ++it) {
    std::string key = it->first.IsScalar() ? it->first.Scalar() : describe_node(it->first);
    std::string full = child_path(key);
    if (!seen.insert(key).second)
      fail("{}: duplicate key '{}'", source_.where(it->first, full), full);
    if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
    std::string hint = nearest(key, known_);
    if (!hint.empty())
      fail("{}: unknown key '{}' (did you mean '{}'?)", source_.where(it->first, full), full, hint);
    fail("{}: unknown key '{}' (valid keys{}: {})", source_.where(it->first, full), full,
         path_.empty() ? "" : " in '" + path_ + "'", fmt::join(known_, ", "));
  }
}

void ConfigReader::type_error(const YAML::Node& n, const std::string& path,
                              std::string_view expected) const {
  fail("{}: {}: expected {}, got {}", source_.where(n, path), path.empty() ? "(top level)" : path,
       expected, describe_node(n));
}

std::filesystem::path ConfigReader::resolve(std::filesystem::path p, const std::string& path) const {
  if (p.empty() || p.is_absolute()) return p;
  auto base = source_.overridden(path) ? std::filesystem::current_path() : source_.base_dir;
  return std::filesystem::absolute(base / p).lexically_normal();
}

}  // namespace agenttune
