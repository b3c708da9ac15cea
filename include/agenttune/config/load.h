#pragma once
// Loading a config: YAML text -> tree -> --set overrides applied to the tree -> bound once into
// the typed struct -> cfg.validate(file) when the struct has one. And the reverse: the resolved
// struct dumped as YAML (every key, defaults included), which loads back to an equal struct.
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "agenttune/config/reader.h"
#include "agenttune/config/writer.h"
#include "agenttune/util/files.h"

namespace agenttune {

// Parses a config's YAML, naming `file` and the line/column in a syntax error. The top level must
// be a mapping (or empty): every loader goes through here, so a scalar or a list there ("hello", a
// truncated file) is the same one-line error whichever command reads it.
YAML::Node parse_yaml(std::string_view text, const std::string& file);

// Whether the config file has `key` at its top level: how prepare and inspect tell an SFT config
// (datasets:) from the others before choosing the struct to load.
bool config_has_key(const std::filesystem::path& path, const std::string& key);

// Applies "a.b.c=value" assignments in order. The value is parsed as YAML (scalar, [flow, list],
// {flow: map}); an empty value is the empty string. Missing intermediate mappings are created,
// list items are addressed by index (a.list.0.x); a path through a scalar is an error. Unknown keys
// are not checked here: binding rejects them with the same message as a misspelt key in the file.
void apply_overrides(YAML::Node& root, const std::vector<std::string>& assignments,
                     ConfigSource& source);

template <class T>
T load_config_text(std::string_view text, ConfigSource source,
                   const std::vector<std::string>& overrides = {}) {
  YAML::Node root = parse_yaml(text, source.file);
  apply_overrides(root, overrides, source);
  T cfg{};
  ConfigReader::bind(source, root, "", cfg);
  if constexpr (requires { cfg.validate(source.file); }) cfg.validate(source.file);
  return cfg;
}

template <class T>
T load_config(const std::filesystem::path& path, const std::vector<std::string>& overrides = {}) {
  ConfigSource source{path.string(), path.parent_path(), {}};
  return load_config_text<T>(read_text_file(path), std::move(source), overrides);
}

template <class T>
std::string dump_config(const T& cfg) {
  YAML::Emitter out;
  out.SetNullFormat(YAML::LowerNull);
  ConfigWriter(out).write(cfg);
  return std::string(out.c_str()) + "\n";
}

// Written atomically: a crash leaves the old file or the new one.
template <class T>
void write_resolved_config(const std::filesystem::path& path, const T& cfg) {
  write_file_atomic(path, "# Resolved configuration (file + --set overrides + defaults).\n" +
                              dump_config(cfg));
}

}  // namespace agenttune
