#include "agenttune/config/source.h"

#include <fmt/format.h>

#include <algorithm>

#include "agenttune/util/utf8.h"

namespace agenttune {
namespace {

bool is_within(const std::string& path, const std::string& root) {
  if (path.size() < root.size() || path.compare(0, root.size(), root) != 0) return false;
  return path.size() == root.size() || path[root.size()] == '.' || path[root.size()] == '[';
}

// Line breaks as spaces and bytes that are not UTF-8 as \xNN, so a message stays one readable line.
std::string printable(std::string_view s) {
  std::string out;
  while (!s.empty()) {
    const size_t bad = std::min(first_invalid_utf8(s), s.size());
    for (char c : s.substr(0, bad)) out += c == '\n' || c == '\r' ? ' ' : c;
    if (bad == s.size()) break;
    out += fmt::format("\\x{:02X}", static_cast<unsigned char>(s[bad]));
    s.remove_prefix(bad + 1);
  }
  return out;
}

}  // namespace

bool ConfigSource::overridden(const std::string& path) const {
  for (const auto& [p, text] : overrides)
    if (is_within(path, p)) return true;
  return false;
}

std::string ConfigSource::where(const YAML::Node& node, const std::string& path) const {
  // The latest override wins, as it does when the overrides are applied.
  for (auto it = overrides.rbegin(); it != overrides.rend(); ++it)
    if (is_within(path, it->first)) return fmt::format("{}: {}", file, it->second);
  // Values parsed from an override string carry marks of that string, so marks are consulted only
  // for nodes no override produced.
  if (node.IsDefined() && !node.Mark().is_null()) return fmt::format("{}:{}", file, node.Mark().line + 1);
  // A key created on the way to an overridden value (--set new.key=1) has no mark of its own.
  for (auto it = overrides.rbegin(); it != overrides.rend(); ++it)
    if (is_within(it->first, path)) return fmt::format("{}: {}", file, it->second);
  return file;
}

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: {
      // One line, and short: the scalar may be a whole mangled file.
      std::string text = printable(node.Scalar());
      if (text.size() > 60) text = text.substr(0, 57) + "...";
      return fmt::format("'{}'", text);
    }
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Undefined: break;
  }
  return "nothing";
}

}  // namespace agenttune
