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

// Keeps the memory this process frees for its next allocations instead of glibc's default: every
// block over the mmap threshold (at most 32 MiB) is a fresh mmap returned at its free, and the
// heap's free top is trimmed. A training step reaches the same peak every step, so its large
// activations and grads would come back as new pages every step, each first touch a page fault
// (about 120,000 per step, 0.5 GB, at hidden 512 x 4 layers, 4 x 512 tokens on CPU; about 2,200
// with this). A user's own glibc malloc settings (GLIBC_TUNABLES, MALLOC_*_) win. Returns false
// when glibc refused.
bool keep_freed_host_memory();

// "1.23 GiB", "456.0 MiB", "789 bytes".
std::string format_bytes(double bytes);

}  // namespace agenttune
