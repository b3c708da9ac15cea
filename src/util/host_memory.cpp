#include "agenttune/util/host_memory.h"

#include <malloc.h>

#include <charconv>
#include <cstdlib>
#include <limits>
#include <fstream>
#include <sstream>

#include "agenttune/util/error.h"

namespace agenttune {

namespace {

// The kB figure of the meminfo line "KEY:   1234 kB", if there is one.
std::optional<double> meminfo_kb(std::string_view meminfo, std::string_view key) {
  for (size_t begin = 0; begin < meminfo.size();) {
    size_t end = meminfo.find('\n', begin);
    if (end == std::string_view::npos) end = meminfo.size();
    std::string_view line = meminfo.substr(begin, end - begin);
    begin = end + 1;
    if (line.size() <= key.size() || line.substr(0, key.size()) != key || line[key.size()] != ':') continue;
    line.remove_prefix(key.size() + 1);
    line.remove_prefix(std::min(line.find_first_not_of(' '), line.size()));
    int64_t kb = 0;
    if (std::from_chars(line.data(), line.data() + line.size(), kb).ec != std::errc()) return std::nullopt;
    return static_cast<double>(kb);
  }
  return std::nullopt;
}

}  // namespace

std::optional<double> available_bytes_in_meminfo(std::string_view meminfo) {
  auto available = meminfo_kb(meminfo, "MemAvailable");
  if (!available) return std::nullopt;
  return (*available + meminfo_kb(meminfo, "SwapFree").value_or(0.0)) * 1024.0;
}

std::optional<double> available_host_bytes() {
  std::ifstream in("/proc/meminfo");
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return available_bytes_in_meminfo(text.str());
}

void require_host_memory(double bytes, const std::string& what) {
  const auto available = available_host_bytes();
  if (!available || bytes <= *available) return;
  fail("cannot allocate {}: it needs {} of host memory but only {} are available (MemAvailable + SwapFree)", what,
       format_bytes(bytes), format_bytes(*available));
}

std::string format_bytes(double bytes) {
  if (bytes >= 1024.0 * 1024 * 1024) return fmt::format("{:.3g} GiB", bytes / (1024.0 * 1024 * 1024));
  if (bytes >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", bytes / (1024.0 * 1024));
  return fmt::format("{:.0f} bytes", bytes);
}

bool keep_freed_host_memory() {
  for (const char* var : {"GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"})
    if (std::getenv(var)) return true;
  return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
}

}  // namespace agenttune
