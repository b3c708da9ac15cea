#pragma once
// Where a config's YAML came from: the file named in every message, the folder its relative paths
// resolve against, and the --set overrides (so an error in an overridden value points at the
// override, not at a line of the file).
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace agenttune {

struct ConfigSource {
  std::string file;                // as shown in messages, e.g. "configs/tiny/model.yaml"
  std::filesystem::path base_dir;  // relative paths written in the file resolve against this
  // (display path "a.b[0].c", "--set a.b.0.c=v") for each override applied, in order.
  std::vector<std::pair<std::string, std::string>> overrides;

  // "file:LINE" for a node of the file, "file: --set a.b=v" for an overridden one, else "file".
  std::string where(const YAML::Node& node, const std::string& path) const;
  // True when the value at `path` was set (or replaced wholesale) by an override.
  bool overridden(const std::string& path) const;
};

// "null", "'abc'", "a list", "a mapping": how a node is shown in "expected X, got Y".
std::string describe_node(const YAML::Node& node);

}  // namespace agenttune
