#pragma once
// ConfigReader: the visitor that binds a YAML mapping into a struct. A struct opts in with
//
//   template <class V> void visit(V& v, MyConfig& c) {
//     v("steps", c.steps);            // scalar, std::optional<T>, std::vector<T>, enum, nested struct
//     v.section("model", c.model);    // a nested struct (same as v("model", ...), but says so)
//     v.one_or_list("eos_token_id", c.eos_token_id, c.extra_eos_token_ids);  // 2 or [2, 7]
//   }
//
// found by argument-dependent lookup, so it lives beside the struct. The same visit() drives the
// writer (writer.h). Missing keys keep the struct's defaults; keys no field consumed are errors
// that suggest the nearest valid key; wrong types say what was expected and where.
// Relative std::filesystem::path values resolve against the config file's folder, or against the
// working directory when they come from --set (where a shell user expects them to).
#include <yaml-cpp/yaml.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agenttune/config/scalars.h"
#include "agenttune/config/source.h"

namespace agenttune {

class ConfigReader;

template <class T>
concept ConfigStruct = requires(ConfigReader& r, T& t) { visit(r, t); };

namespace config_detail {
template <class T> inline constexpr bool is_optional = false;
template <class T> inline constexpr bool is_optional<std::optional<T>> = true;
template <class T> inline constexpr bool is_vector = false;
template <class T, class A> inline constexpr bool is_vector<std::vector<T, A>> = true;
template <class T>
concept HasScalar = requires(std::string_view s) { ConfigScalar<T>::parse(s); };
}  // namespace config_detail

class ConfigReader {
 public:
  // `map` must be a mapping or null (null = every field keeps its default); `path` is its dotted
  // location ("" at the top).
  ConfigReader(const ConfigSource& source, YAML::Node map, std::string path);

  template <class T>
  void operator()(std::string_view key, T& field) {
    YAML::Node node = take(key);
    if (node.IsDefined()) read(node, child_path(key), field);
  }
  template <class S>
    requires ConfigStruct<S>
  void section(std::string_view key, S& s) {
    (*this)(key, s);
  }
  // A key that is one item or a non-empty list of them, as Hugging Face's config.json writes
  // eos_token_id (2, or Llama-3.1-Instruct's [128001, 128008, 128009]): the first item goes to
  // `first`, the others to `rest` (empty for one item).
  template <class T>
  void one_or_list(std::string_view key, T& first, std::vector<T>& rest) {
    YAML::Node node = take(key);
    if (!node.IsDefined()) return;
    const std::string path = child_path(key);
    std::vector<T> items;
    if (node.IsScalar()) {
      items.emplace_back();
      read(node, path, items.front());
    } else if (node.IsSequence() && node.size() > 0) {
      read(node, path, items);
    } else {
      type_error(node, path, std::string(ConfigScalar<T>::expected) + " or a non-empty list of them");
    }
    first = items.front();
    rest.assign(items.begin() + 1, items.end());
  }
  // Throws for any key of the mapping that no field consumed, and for duplicate keys.
  void finish() const;

  // Binds `node` (the whole mapping at `path`) into `out` and checks for unknown keys.
  template <class T>
  static void bind(const ConfigSource& source, const YAML::Node& node, const std::string& path,
                   T& out) {
    ConfigReader r(source, node, path);
    r.read(node, path, out);
  }

 private:
  YAML::Node take(std::string_view key);
  std::string child_path(std::string_view key) const;
  [[noreturn]] void type_error(const YAML::Node& n, const std::string& path,
                               std::string_view expected) const;
  std::filesystem::path resolve(std::filesystem::path p, const std::string& path) const;

  template <class T>
  void read(const YAML::Node& n, const std::string& path, T& out) {
    using namespace config_detail;
    if constexpr (is_optional<T>) {
      if (n.IsNull()) {
        out.reset();
        return;
      }
      typename T::value_type v = out.value_or(typename T::value_type{});
      read(n, path, v);
      out = std::move(v);
    } else if constexpr (is_vector<T>) {
      if (!n.IsSequence()) type_error(n, path, "a list");
      T items;
      for (size_t i = 0; i < n.size(); ++i) {
        typename T::value_type v{};
        read(n[i], path + "[" + std::to_string(i) + "]", v);
        items.push_back(std::move(v));
      }
      out = std::move(items);
    } else if constexpr (HasScalar<T>) {
      if (!n.IsScalar()) type_error(n, path, ConfigScalar<T>::expected);
      std::optional<T> v = ConfigScalar<T>::parse(n.Scalar());
      if (!v) type_error(n, path, ConfigScalar<T>::expected);
      if constexpr (std::is_same_v<T, std::filesystem::path>) v = resolve(*v, path);
      out = std::move(*v);
    } else {
      static_assert(ConfigStruct<T>, "config field type has neither ConfigScalar<T> nor visit()");
      if (n.IsNull()) return;  // "model:" with every line commented out: keep the defaults
      if (!n.IsMap()) type_error(n, path, "a mapping");
      ConfigReader sub(source_, n, path);
      visit(sub, out);
      sub.finish();
    }
  }

  const ConfigSource& source_;
  YAML::Node map_;
  std::string path_;
  std::vector<std::string> known_;  // every key visit() offered, present or not
};

}  // namespace agenttune
