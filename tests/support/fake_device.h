#pragma once
// A fake accelerator for the test suite: LibTorch's PrivateUse1 backend, registered under the name
// "fake" (tensors print as fake:0, fake:1, ...), backed by host memory but behaving like a GPU where
// our code could go wrong:
//   - an op that mixes a non-scalar CPU tensor with fake-device tensors fails, naming the op, with
//     the error CUDA gives ("Expected all tensors to be on the same device ...");
//   - device memory comes from its own allocator, which counts live and peak bytes per device;
//   - host syncs (item(), a blocking device->host copy, ops whose output size depends on the data)
//     and host<->device bytes are counted;
//   - each thread has a current device (as CUDA does), and autograd runs backward on a device
//     thread of its own, as it does for CUDA.
// Every other op runs the CPU kernel (PyTorch's cpu_fallback); the copies it makes to do so are not
// counted as transfers.
//
// Linked into a test, the library registers itself when loaded. The agenttune binary gets it with
// LD_PRELOAD=<libagenttune_fake_device.so> and `dist.device: fake` (or `--device fake`).
// AGENTTUNE_FAKE_DEVICES sets how many devices are visible (default 2), and
// AGENTTUNE_FAKE_DEVICE_CAPACITY=BYTES each one's memory: an allocation beyond it fails with CUDA's
// out-of-memory error (c10::OutOfMemoryError), and the allocator (a c10::DeviceAllocator, as CUDA's)
// reports capacity less allocated bytes as free (getMemoryInfo). Without one, free is the host's
// available memory and nothing is refused.
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace agenttune::testing::fake_device {

struct Counters {
  int64_t live_bytes = 0;    // allocated and not yet freed
  int64_t peak_bytes = 0;    // highest live_bytes since the last reset
  int64_t allocations = 0;
  int64_t host_syncs = 0;    // points where the host waits for the device's results
  int64_t h2d_bytes = 0;
  int64_t d2h_bytes = 0;
  int64_t h2d_copies = 0;
  int64_t d2h_copies = 0;
};

// The device's counters (each device has its own; syncs and transfers are counted on the device
// whose tensor is read or written).
Counters counters(int index = 0);
// Starts a measurement: peak := live, and the event counts go to zero.
void reset(int index = 0);
void reset_all();
c10::Device device(int index = 0);
int device_count();
void set_device_count(int n);
// Bytes each device holds before an allocation fails (0: no limit); AGENTTUNE_FAKE_DEVICE_CAPACITY's.
int64_t capacity();
void set_capacity(int64_t bytes);
// "host_syncs=3 h2d=1.2 MB d2h=8 B peak=40.1 MB" for test output.
std::string describe(const Counters& c);

}  // namespace agenttune::testing::fake_device
