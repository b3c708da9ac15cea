#pragma once
// ConfigWriter: the visitor that emits a struct as YAML, driven by the same visit() as the reader
// so the dump always lists exactly the keys the reader accepts. Every field is written, defaults
// included: a resolved config is the complete record of a run.
#include <yaml-cpp/yaml.h>

#include <string>
#include <string_view>
#include <vector>

#include "agenttune/config/reader.h"

namespace agenttune {

class ConfigWriter {
 public:
  explicit ConfigWriter(YAML::Emitter& out) : out_(out) {}

  template <class T>
  void operator()(std::string_view key, const T& field) {
    out_ << YAML::Key << std::string(key) << YAML::Value;
    write(field);
  }
  template <class S>
    requires ConfigStruct<S>
  void section(std::string_view key, const S& s) {
    (*this)(key, s);
  }
  // As the reader takes it: the one item alone, else the list.
  template <class T>
  void one_or_list(std::string_view key, const T& first, const std::vector<T>& rest) {
    if (rest.empty()) return (*this)(key, first);
    std::vector<T> items{first};
    items.insert(items.end(), rest.begin(), rest.end());
    (*this)(key, items);
  }

  template <class T>
  void write(const T& v) {
    using namespace config_detail;
    if constexpr (is_optional<T>) {
      if (v) write(*v);
      else out_ << YAML::Null;
    } else if constexpr (is_vector<T>) {
      // Lists of scalars read best on one line; lists of structs as blocks.
      if constexpr (HasScalar<typename T::value_type>) out_ << YAML::Flow;
      out_ << YAML::BeginSeq;
      for (const auto& item : v) write(item);
      out_ << YAML::EndSeq;
    } else if constexpr (HasScalar<T>) {
      std::string text = ConfigScalar<T>::format(v);
      if constexpr (config_quoted<T>) out_ << YAML::DoubleQuoted;
      out_ << text;
    } else {
      out_ << YAML::BeginMap;
      // visit() takes a mutable struct so one function serves reading and writing; the writer
      // only reads through the reference.
      visit(*this, const_cast<T&>(v));
      out_ << YAML::EndMap;
    }
  }

 private:
  YAML::Emitter& out_;
};

}  // namespace agenttune
