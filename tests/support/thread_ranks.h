#pragma once
// Ranks as threads in one process over a shared HashStore, each with its own Gloo group: the
// fast way to test sharded code on 2 cores. Every rank's error is reported as a test failure.
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <c10/core/DeviceGuard.h>

#include <chrono>
#include <optional>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "agenttune/parallel/process_group.h"

namespace agenttune::testing {

// `device_of(rank)` gives each rank its device (made current on its thread, as a GPU rank's
// would be); default: the CPU.
inline void run_ranks(int n, const std::function<void(parallel::ProcessGroup&, const parallel::WorldInfo&)>& fn,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30),
                      const std::function<c10::Device(int)>& device_of = {}) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(n);
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        parallel::ProcessGroupOptions o;
        o.timeout = timeout;
        const c10::Device dev = device_of ? device_of(r) : c10::Device(c10::kCPU);
        std::optional<c10::DeviceGuard> current;
        if (!dev.is_cpu()) current.emplace(dev);
        parallel::ProcessGroup d(store, r, n, dev, o);
        parallel::WorldInfo w;
        w.rank = r, w.world_size = n, w.local_rank = r, w.local_world_size = n;
        fn(d, w);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

}  // namespace agenttune::testing
