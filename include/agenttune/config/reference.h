#pragma once
// The config reference (docs/config.md): every key a config struct accepts, with its type and
// default, listed by the same visit() tables the reader binds through, so the reference cannot
// list a key the reader refuses or miss one it accepts. Meanings live in a table keyed by the
// struct that offers a key (ConfigMeanings), so a struct used in two configs (the model shape) is
// described once; rendering fails for a key without a meaning and for a meaning without a key.
#include <yaml-cpp/yaml.h>

#include <initializer_list>
#include <optional>
#include <map>
#include <string>
#include <string_view>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include "agenttune/config/reader.h"
#include "agenttune/config/writer.h"

namespace agenttune {

struct ConfigKey {
  std::string path;          // dotted, list items as []: data.sources[].weight
  std::string type;          // in the reader's words: "integer", "list of path", "mapping or null"
  std::string default_yaml;  // as a resolved config writes it; empty for a mapping (its keys follow)
  std::type_index owner;     // the struct whose visit() offers the key
  std::string key;           // the key within the owner
};

namespace config_detail {
// "an integer" -> "integer": the reader's `expected` text, as a type name.
std::string type_name_from_expected(std::string_view expected);
std::string struct_name(const std::type_index& t);  // demangled, for messages
template <class T> inline constexpr bool is_optional_struct = false;
template <class T> inline constexpr bool is_optional_struct<std::optional<T>> = ConfigStruct<T>;

template <class T>
std::string type_name() {
  if constexpr (is_optional<T>) return type_name<typename T::value_type>() + " or null";
  else if constexpr (is_vector<T>)
    return ConfigStruct<typename T::value_type> ? "list of mappings" : "list of " + type_name<typename T::value_type>();
  else if constexpr (HasScalar<T>) return type_name_from_expected(ConfigScalar<T>::expected);
  else return "mapping";
}

// What a resolved config says for `v`, on one line; empty for a mapping, whose keys follow.
template <class T>
std::string default_yaml(const T& v) {
  if constexpr (ConfigStruct<T>) {
    return "";
  } else if constexpr (is_optional_struct<T>) {
    return v ? "" : "null";
  } else {
    YAML::Emitter out;
    out.SetNullFormat(YAML::LowerNull);
    out.SetSeqFormat(YAML::Flow);
    out.SetMapFormat(YAML::Flow);
    ConfigWriter(out).write(v);
    return out.c_str();
  }
}
}  // namespace config_detail

// The visitor that lists keys (config/reader.h's visit() convention).
class ConfigKeyLister {
 public:
  ConfigKeyLister(std::vector<ConfigKey>& out, std::string prefix, std::type_index owner)
      : out_(out), prefix_(std::move(prefix)), owner_(owner) {}

  template <class T>
  void operator()(std::string_view key, T& field) {
    using namespace config_detail;
    const std::string path = prefix_ + std::string(key);
    out_.push_back({path, type_name<T>(), default_yaml(field), owner_, std::string(key)});
    if constexpr (ConfigStruct<T>) {
      list(path + ".", field);
    } else if constexpr (is_optional<T> || is_vector<T>) {
      // The keys of a list item or an unset section, with their defaults when it is given.
      if constexpr (ConfigStruct<typename T::value_type>) {
        typename T::value_type item{};
        if constexpr (is_optional<T>) item = field.value_or(item);
        list(path + (is_vector<T> ? "[]." : "."), item);
      }
    }
  }
  template <class S>
  void section(std::string_view key, S& s) {
    (*this)(key, s);
  }
  template <class T>
  void one_or_list(std::string_view key, T& first, std::vector<T>& rest) {
    using namespace config_detail;
    const std::string item = type_name<T>();
    std::string dflt = default_yaml(first);
    if (!rest.empty()) {
      std::vector<T> items{first};
      items.insert(items.end(), rest.begin(), rest.end());
      dflt = default_yaml(items);
    }
    out_.push_back({prefix_ + std::string(key), item + " or list of " + item, dflt, owner_, std::string(key)});
  }

  template <class S>
  void list(const std::string& prefix, S s) {
    ConfigKeyLister sub(out_, prefix, typeid(S));
    visit(sub, s);
  }

 private:
  std::vector<ConfigKey>& out_;
  std::string prefix_;
  std::type_index owner_;
};

// Every key of the config struct T, depth first in visit() order, with T{}'s defaults.
template <class T>
std::vector<ConfigKey> list_config_keys() {
  std::vector<ConfigKey> keys;
  ConfigKeyLister(keys, "", typeid(T)).list("", T{});
  return keys;
}

// One-line meanings, per struct and key. `table` names where they are written (for the error).
class ConfigMeanings {
 public:
  explicit ConfigMeanings(std::string table) : table_(std::move(table)) {}
  template <class S>
  ConfigMeanings& add(std::initializer_list<std::pair<const std::string, std::string>> meanings) {
    auto& m = by_struct_[typeid(S)];
    m.insert(meanings.begin(), meanings.end());
    return *this;
  }
  // The meaning of k; nullptr when there is none.
  const std::string* find(const ConfigKey& k) const;
  // "StructName.key" for each meaning no key in `used` has.
  std::vector<std::string> unused(const std::vector<ConfigKey>& used) const;
  const std::string& table() const { return table_; }

 private:
  std::string table_;
  std::map<std::type_index, std::map<std::string, std::string>> by_struct_;
};

// One config kind of the reference: a heading, a paragraph, its keys.
struct ConfigReferenceSection {
  std::string title;
  std::string intro;
  std::vector<ConfigKey> keys;
};

// The Markdown reference: `preamble`, then one table per section. Throws agenttune::Error listing
// every key without a meaning and every meaning without a key.
std::string config_reference_markdown(std::string_view preamble, const std::vector<ConfigReferenceSection>& sections,
                                      const ConfigMeanings& meanings);

}  // namespace agenttune
