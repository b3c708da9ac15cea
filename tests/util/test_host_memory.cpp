// Sizing an allocation against the host's memory before making it (issue 22): a model too large
// for the machine is one error with both figures, never LibTorch's allocator message (exit 3) or
// the OOM killer (a model that overcommit let through, killed when initialised).
#include <gtest/gtest.h>

#include "agenttune/util/error.h"
#include "agenttune/util/host_memory.h"

namespace agenttune {
namespace {

TEST(HostMemory, AvailableIsMemAvailablePlusFreeSwapFromMeminfo) {
  const std::string meminfo =
      "MemTotal:       24683772 kB\nMemFree:        21098248 kB\nMemAvailable:   23143896 kB\n"
      "SwapTotal:       2097148 kB\nSwapFree:        1048576 kB\n";
  EXPECT_EQ(available_bytes_in_meminfo(meminfo), (23143896.0 + 1048576.0) * 1024.0);
  EXPECT_EQ(available_bytes_in_meminfo("MemAvailable: 10 kB\n"), 10240.0);  // no swap line: none
  EXPECT_EQ(available_bytes_in_meminfo("MemFree: 10 kB\n"), std::nullopt);  // old kernels: no check
  EXPECT_EQ(available_bytes_in_meminfo("MemAvailableX: 10 kB\nMemAvailable: x kB\n"), std::nullopt);
  const auto here = available_host_bytes();
  ASSERT_TRUE(here.has_value());
  EXPECT_GT(*here, 0.0);
}

TEST(HostMemory, MoreThanIsAvailableIsOneErrorWithBothFigures) {
  require_host_memory(1024.0, "a small buffer");  // fits anywhere
  try {
    require_host_memory(4e15, "a model of 1e+15 parameters");
    FAIL() << "4 PB fitted in host memory";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cannot allocate a model of 1e+15 parameters: it needs 3.73e+06 GiB of host memory but only "),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find(" GiB are available (MemAvailable + SwapFree)"), std::string::npos) << msg;
  }
  EXPECT_EQ(format_bytes(512), "512 bytes");
  EXPECT_EQ(format_bytes(3.5 * 1024 * 1024), "3.5 MiB");
  EXPECT_EQ(format_bytes(1.5 * 1024 * 1024 * 1024), "1.5 GiB");
}

}  // namespace
}  // namespace agenttune
