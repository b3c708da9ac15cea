// The only translation unit that includes spdlog (see include/agenttune/util/log.h for why).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <string_view>

namespace agenttune::log {

enum class Level { Debug, Info, Warn, Error };

namespace {
spdlog::logger& logger() {
  static auto l = [] {
    auto lg = spdlog::stderr_color_mt("agenttune");
    lg->set_pattern("[%H:%M:%S] %^%l%$ %v");
    return lg;
  }();
  return *l;
}
spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::Debug: return spdlog::level::debug;
    case Level::Info: return spdlog::level::info;
    case Level::Warn: return spdlog::level::warn;
    case Level::Error: return spdlog::level::err;
  }
  return spdlog::level::info;
}
}  // namespace

void write(Level level, std::string_view message) {
  logger().log(to_spd(level), "{}", std::string(message));
}
void set_level(Level level) { logger().set_level(to_spd(level)); }
bool enabled(Level level) { return logger().should_log(to_spd(level)); }

}  // namespace agenttune::log
