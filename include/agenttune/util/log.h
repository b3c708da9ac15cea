#pragma once
// Logging. Debian's spdlog is built against fmt 9 while LibTorch ships fmt 12 in its include tree,
// and the two cannot share a translation unit. So messages are formatted here with LibTorch's fmt
// (header-only) and handed as plain strings to a sink compiled in its own target against spdlog
// (src/log/); no TU ever sees both fmt versions.
#include <fmt/format.h>

#include <string_view>

namespace agenttune::log {

enum class Level { Debug, Info, Warn, Error };

void write(Level level, std::string_view message);
void set_level(Level level);
bool enabled(Level level);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Debug)) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Info)) write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::Warn)) write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace agenttune::log
