#pragma once
// One process group for the whole job: a c10d store for rendezvous plus one c10d backend (NCCL on
// CUDA, Gloo on CPU). Every collective here is synchronous, on NCCL too (the CPU waits, up to the
// timeout), and turns a backend failure or timeout into an agenttune::Error that names the
// collective, what it carried, this rank and the world ("all_reduce of 'grad_norm' on rank 1 of 2
// timed out after 30 s"), so a dead or stuck peer makes every other rank exit non-zero instead of
// hanging. Code that overlaps communication with compute drives backend() itself.
//
// After one failed collective the group is unusable (the backend's connections are broken); later
// calls throw at once, and teardown aborts instead of waiting for peers.
//
// A world of one takes the same path (a Gloo or NCCL group of size 1), so single-GPU runs exercise
// the code that multi-GPU runs use.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agenttune/dist/rendezvous.h"

namespace agenttune::dist {

enum class Reduce { Sum, Max, Min };

struct DistOptions {
  // auto: NCCL when the device is CUDA, Gloo otherwise. gloo | nccl force one.
  std::string backend = "auto";
  // A collective that has not finished after this long fails on every rank still waiting.
  std::chrono::milliseconds timeout = std::chrono::seconds(600);
  // How long ranks wait for each other to start (store connect and the join barrier). Model
  // loading happens before this, so slow filesystems do not count against it.
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(300);
  // Gloo's network interface; empty: GLOO_SOCKET_IFNAME when set, else this host's name, else
  // loopback (c10d's default device).
  std::string gloo_interface;
};

class Dist {
 public:
  // Joins the job described by `world`: a TCPStore at master_addr:master_port (rank 0 serves it
  // unless torchrun's agent already does; a world of one needs no port at all), a join barrier
  // that names the missing ranks on timeout, then the backend. `device` is this rank's device
  // (cuda:<local_rank> in training, or cpu).
  static std::unique_ptr<Dist> create(const WorldInfo& world, c10::Device device, const DistOptions& opts = {});

  // Over an existing store (tests run ranks as threads sharing a HashStore or FileStore).
  Dist(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size, c10::Device device,
       const DistOptions& opts = {});
  ~Dist();
  Dist(const Dist&) = delete;
  Dist& operator=(const Dist&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }
  c10::Device device() const { return device_; }
  const std::string& backend_name() const { return backend_name_; }
  std::chrono::milliseconds timeout() const { return opts_.timeout; }
  // For callers that overlap communication with compute (FSDP streams); they own error handling.
  const c10::intrusive_ptr<c10d::Backend>& backend() const { return backend_; }
  c10d::Store& store() const { return *store_; }
  // Wall time this rank has spent waiting in collectives so far. Collectives are synchronous, so
  // none of it overlaps compute: the share of a step it takes is communication left exposed.
  double comm_seconds() const { return comm_seconds_; }

  // `what` names the payload in error messages ("grad_norm", "layers.3 params").
  void all_reduce(at::Tensor& t, Reduce op = Reduce::Sum, std::string_view what = "tensor");
  double all_reduce(double value, Reduce op, std::string_view what);
  void broadcast(at::Tensor& t, int root = 0, std::string_view what = "tensor");
  void barrier(std::string_view what = "barrier");
  // out.numel() == world * in.numel(), rank-major; both contiguous, same dtype and device.
  void all_gather_into_tensor(at::Tensor& out, const at::Tensor& in, std::string_view what = "tensor");
  // in.numel() == world * out.numel(); out gets the sum of every rank's slice [rank].
  void reduce_scatter_tensor(at::Tensor& out, const at::Tensor& in, std::string_view what = "tensor");
  // Every rank's bytes, indexed by rank (for consistency checks: config hashes, data fingerprints).
  std::vector<std::string> all_gather_bytes(std::string_view bytes, std::string_view what);

  // Tears the backend down; called by the destructor. After a failed collective the backend is
  // aborted rather than drained, so exiting never blocks on a dead peer.
  void shutdown();

 private:
  void init_backend(const DistOptions& opts);
  template <typename F>
  void run(std::string_view op, std::string_view what, F&& start);
  at::Tensor on_device(const at::Tensor& cpu) const;

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  int rank_ = 0;
  int world_size_ = 1;
  c10::Device device_{c10::kCPU};
  std::string backend_name_;
  DistOptions opts_;
  std::chrono::milliseconds wait_limit_{0};
  bool failed_ = false;
  double comm_seconds_ = 0;
};

}  // namespace agenttune::dist
