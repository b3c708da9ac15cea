#pragma once
// How one YAML scalar becomes one C++ value and back. Specialise ConfigScalar<T> (expected, parse,
// format) for a new leaf type, or EnumNames<E> for an enum spelt as strings in YAML. Parsing works
// on the scalar's text, so error messages say exactly what was written. This is also the enum-name
// helper: an enum's one name table (EnumNames<E>, kept beside the enum) serves YAML, the command
// line and messages through enum_name, parse_enum and enum_name_list.
#include <array>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "agenttune/util/utf8.h"

namespace agenttune {

template <class T>
struct ConfigScalar;  // no primary: a field of an unsupported type fails to compile

// Specialise beside the enum with
// `static constexpr std::array<std::pair<E, std::string_view>, N> values = {...}`.
template <class E>
struct EnumNames;

namespace config_detail {
std::optional<int64_t> parse_int(std::string_view s);
std::optional<uint64_t> parse_uint(std::string_view s);
std::optional<double> parse_double(std::string_view s);
std::optional<bool> parse_bool(std::string_view s);
std::string format_double(double v);
std::string format_double(float v);  // shortest text for the float itself, not its double widening
}  // namespace config_detail

template <std::signed_integral T>
  requires(!std::same_as<T, bool>)
struct ConfigScalar<T> {
  static constexpr std::string_view expected = "an integer";
  static std::optional<T> parse(std::string_view s) {
    auto v = config_detail::parse_int(s);
    if (!v || *v < std::numeric_limits<T>::min() || *v > std::numeric_limits<T>::max())
      return std::nullopt;
    return static_cast<T>(*v);
  }
  static std::string format(T v) { return std::to_string(v); }
};

template <std::unsigned_integral T>
  requires(!std::same_as<T, bool>)
struct ConfigScalar<T> {
  static constexpr std::string_view expected = "a non-negative integer";
  static std::optional<T> parse(std::string_view s) {
    auto v = config_detail::parse_uint(s);
    if (!v || *v > std::numeric_limits<T>::max()) return std::nullopt;
    return static_cast<T>(*v);
  }
  static std::string format(T v) { return std::to_string(v); }
};

template <std::floating_point T>
struct ConfigScalar<T> {
  static constexpr std::string_view expected = "a number";
  static std::optional<T> parse(std::string_view s) {
    auto v = config_detail::parse_double(s);
    return v ? std::optional<T>(static_cast<T>(*v)) : std::nullopt;
  }
  static std::string format(T v) {
    if constexpr (std::is_same_v<T, float>) return config_detail::format_double(v);
    else return config_detail::format_double(static_cast<double>(v));
  }
};

template <>
struct ConfigScalar<bool> {
  static constexpr std::string_view expected = "a boolean (true or false)";
  static std::optional<bool> parse(std::string_view s) { return config_detail::parse_bool(s); }
  static std::string format(bool v) { return v ? "true" : "false"; }
};

template <>
struct ConfigScalar<std::string> {
  static constexpr std::string_view expected = "a string (UTF-8)";
  // Strings end up in JSON (manifests, state files, keys such as text_field), which must be UTF-8:
  // refused here, the error names the file, line and key instead of failing later without them.
  static std::optional<std::string> parse(std::string_view s) {
    if (first_invalid_utf8(s) != std::string_view::npos) return std::nullopt;
    return std::string(s);
  }
  static std::string format(const std::string& v) { return v; }
};

// Paths are strings here; the reader additionally resolves relative ones (see reader.h).
template <>
struct ConfigScalar<std::filesystem::path> {
  static constexpr std::string_view expected = "a path";
  static std::optional<std::filesystem::path> parse(std::string_view s) {
    return std::filesystem::path(s);
  }
  static std::string format(const std::filesystem::path& v) { return v.string(); }
};

// An enum with a name table.
template <class E>
concept NamedEnum = std::is_enum_v<E> && requires { EnumNames<E>::values; };

// The value's name (its number when the table lacks it).
template <NamedEnum E>
std::string enum_name(E e) {
  for (const auto& [v, name] : EnumNames<E>::values)
    if (v == e) return std::string(name);
  return std::to_string(static_cast<int64_t>(e));
}
// The value named `s`; nullopt for a name not in the table.
template <NamedEnum E>
std::optional<E> parse_enum(std::string_view s) {
  for (const auto& [v, name] : EnumNames<E>::values)
    if (name == s) return v;
  return std::nullopt;
}
// "a, b, c": the names in table order, for messages.
template <NamedEnum E>
std::string enum_name_list() {
  std::string s;
  for (const auto& [v, name] : EnumNames<E>::values) s += (s.empty() ? "" : ", ") + std::string(name);
  return s;
}

template <NamedEnum E>
struct ConfigScalar<E> {
  static inline const std::string expected = "one of " + enum_name_list<E>();
  static std::optional<E> parse(std::string_view s) { return parse_enum<E>(s); }
  static std::string format(E e) { return enum_name(e); }
};

// Types whose values are written as strings in YAML, so the writer quotes them: a string "true"
// or "null" must not come back as a boolean or a null.
template <class T>
inline constexpr bool config_quoted = std::same_as<T, std::string> || std::same_as<T, std::filesystem::path>;

}  // namespace agenttune
