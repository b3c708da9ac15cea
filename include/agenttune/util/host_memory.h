#pragma once
// How much host memory this process can still get, checked before a large allocation: on Linux an
// allocation that does not fit either fails in LibTorch's allocator with a bare message or, worse,
// succeeds (overcommit) and is killed by the OOM killer when first touched. Asking first turns
// both into one error naming what was being allocated.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace agenttune {

// MemAvailable + SwapFree in bytes from /proc/meminfo text; nullopt when MemAvailable is absent.
std::optional<double> available_bytes_in_meminfo(std::string_view meminfo);
// The same for this machine now; nullopt where /proc/meminfo cannot be read (the check is skipped).
std::optional<double> available_host_bytes();

// Throws agenttune::Error "cannot allocate WHAT: it needs X GiB of host memory but only Y GiB are
// available" when `bytes` exceed available_host_bytes(). `bytes` is a double so an absurd shape
// (a fuzzed config.json) is sized without integer overflow.
void require_host_memory(double bytes, const std::string& what);

// "1.23 GiB", "456.0 MiB", "789 bytes".
std::string format_bytes(double bytes);

}  // namespace agenttune
