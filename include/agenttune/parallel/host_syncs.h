#pragma once
// Counting the host syncs of a region with CUDA's own sync debug mode (what
// torch.cuda.set_sync_debug_mode("warn") switches on): while a counter is open, every operation
// that makes the host wait for the device (`.item()`, a blocking copy, a data-dependent shape...)
// raises c10's "called a synchronizing CUDA operation" warning, which the counter takes instead of
// printing. Syncs that do not pass through c10's sync points (a raw cudaDeviceSynchronize, a
// collective's wait) are not seen, exactly as in PyTorch.
//
// An out-of-tree device that reports its syncs through the same switch (the test suite's `fake`
// device does) is counted the same way, which is how this is tested without a GPU.
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>

namespace agenttune::parallel {

class HostSyncCounter {
 public:
  // Throws agenttune::Error when `device` cannot report syncs (the CPU, or a build without CUDA):
  // a count of zero there would be a claim nobody measured.
  explicit HostSyncCounter(c10::Device device);
  ~HostSyncCounter();
  HostSyncCounter(const HostSyncCounter&) = delete;
  HostSyncCounter& operator=(const HostSyncCounter&) = delete;

  // Counts from here on, on this thread (and the autograd threads whose warnings it replays).
  void start();
  // Stops counting and returns the syncs since start(); the first one's source location stays in
  // first_site() so a test or a log can say where a new sync came from.
  int64_t stop();
  const std::string& first_site() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agenttune::parallel
