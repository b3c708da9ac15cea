#include <fmt/format.h>

#include <charconv>

#include "agenttune/config/load.h"
#include "agenttune/util/error.h"
#include "agenttune/util/strings.h"

namespace agenttune {

YAML::Node parse_yaml(std::string_view text, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    fail("{}:{}:{}: invalid YAML: {}", file, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  if (root.IsDefined() && !root.IsNull() && !root.IsMap())
    fail("{}: (top level): expected a mapping, got {}", ConfigSource{file, {}, {}}.where(root, ""),
         describe_node(root));
  return root;
}

bool config_has_key(const std::filesystem::path& path, const std::string& key) {
  const YAML::Node root = parse_yaml(read_text_file(path), path.string());
  // A const node: lookup never inserts, and a null root (an empty file) simply has no keys.
  return root.IsMap() && root[key].IsDefined();
}

namespace {

void apply_one(YAML::Node& root, const std::string& assignment, ConfigSource& source) {
  const std::string where = fmt::format("{}: --set {}", source.file, assignment);
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("{}: expected KEY=VALUE, e.g. --set model.hidden_size=128", where);
  std::string_view value = std::string_view(assignment).substr(eq + 1);
  auto parts = split(std::string_view(assignment).substr(0, eq), '.');
  for (const auto& p : parts)
    if (p.empty()) fail("{}: empty component in key '{}'", where, assignment.substr(0, eq));

  YAML::Node node;
  if (value.empty()) {
    node = YAML::Node(std::string());  // "--set key=" reads as "make it empty"
  } else {
    try {
      node = YAML::Load(std::string(value));
    } catch (const YAML::Exception& e) {
      fail("{}: value is not valid YAML: {}", where, e.msg);
    }
  }

  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  // yaml-cpp's Node::operator= writes through to the referenced node; reset() rebinds `cur`.
  YAML::Node cur;
  cur.reset(root);
  std::string display;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const bool last = i + 1 == parts.size();
    if (cur.IsSequence()) {
      size_t idx = 0;
      auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), idx);
      if (ec != std::errc() || end != part.data() + part.size() || idx >= cur.size())
        fail("{}: '{}' is a list of {} items; '{}' is not an index into it", where, display,
             cur.size(), part);
      display += "[" + part + "]";
      if (last) cur[idx] = node;
      else cur.reset(cur[idx]);
    } else if (cur.IsMap()) {
      display += (display.empty() ? "" : ".") + part;
      if (last) {
        cur[part] = node;
      } else {
        if (!cur[part].IsDefined() || cur[part].IsNull()) cur[part] = YAML::Node(YAML::NodeType::Map);
        cur.reset(cur[part]);
      }
    } else {
      fail("{}: '{}' is {}, not a mapping, so it has no key '{}'", where, display,
           describe_node(cur), part);
    }
  }
  source.overrides.emplace_back(display, "--set " + assignment);
}

}  // namespace

void apply_overrides(YAML::Node& root, const std::vector<std::string>& assignments,
                     ConfigSource& source) {
  for (const auto& a : assignments) apply_one(root, a, source);
}

}  // namespace agenttune
