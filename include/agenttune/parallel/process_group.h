#pragma once
// One process group for the whole job: a c10d store for rendezvous plus one c10d backend (NCCL on
// CUDA, Gloo on CPU). Every collective is issued asynchronously (`*_async` returns a Pending) and
// the plain calls are issue + wait. Pending::wait() blocks the CPU until the collective completes,
// bounded by the timeout counted from the issue, and turns a backend failure or timeout into an
// agenttune::Error that names the collective, what it carried, this rank and the world
// ("all_reduce of 'grad_norm' on rank 1 of 2 timed out after 30 s"), so a dead or stuck peer makes
// every other rank exit non-zero instead of hanging. Between issue and wait the caller computes:
// Gloo runs the collective on its own threads, NCCL on ProcessGroupNCCL's stream (and wait() makes
// the current stream wait for it), which is how the sharded model overlaps communication.
//
// After one failed collective the group is unusable (the backend's connections are broken); later
// calls throw at once, and teardown aborts instead of waiting for peers.
//
// A world of one has no backend: its collectives are done in place (identity or copy) and never
// reach a communicator, so a one-GPU run pays nothing for being a "world". The sharding code is
// the same either way.
//
// On NCCL the waits are stream-ordered (the CPU does not block); drain() blocks until everything
// issued has completed, bounded by the timeout and naming the collective that did not.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "agenttune/config/scalars.h"
#include "agenttune/parallel/rendezvous.h"

namespace agenttune::parallel {
// The c10d backend that carries the collectives (dist.backend).
enum class Backend { Auto, Gloo, Nccl };
}  // namespace agenttune::parallel

namespace agenttune {
// dist.backend's names: the only table (the config, the process group, the smoke test's flag).
template <>
struct EnumNames<parallel::Backend> {
  static constexpr std::array<std::pair<parallel::Backend, std::string_view>, 3> values = {
      {{parallel::Backend::Auto, "auto"}, {parallel::Backend::Gloo, "gloo"}, {parallel::Backend::Nccl, "nccl"}}};
};
}  // namespace agenttune

namespace agenttune::parallel {

enum class Reduce { Sum, Max, Min };

class ProcessGroup;

// A collective in flight. wait() (once; later calls do nothing) throws the same named error as the
// synchronous calls. Dropping a Pending without waiting leaves the collective running (the backend
// keeps its tensors alive), but its result is never copied back: wait on everything you issue.
class Pending {
 public:
  Pending() = default;
  Pending(Pending&&) noexcept = default;
  Pending& operator=(Pending&&) noexcept = default;
  bool active() const { return work_.defined(); }
  void wait();

 private:
  friend class ProcessGroup;
  ProcessGroup* dist_ = nullptr;
  c10::intrusive_ptr<c10d::Work> work_;
  std::string op_, what_;
  std::chrono::steady_clock::time_point issued_;
  std::vector<at::Tensor> keep_;  // buffers that must outlive the collective
  std::function<void()> then_;    // after completion (all_reduce of a non-contiguous tensor copies back)
};

struct ProcessGroupOptions {
  // auto: NCCL when the device is CUDA, Gloo otherwise, and none for a world of one. gloo | nccl
  // force one, even for a world of one.
  Backend backend = Backend::Auto;
  // A collective that has not finished after this long fails on every rank still waiting.
  std::chrono::milliseconds timeout = std::chrono::seconds(600);
  // How long ranks wait for each other to start (store connect and the join barrier). Model
  // loading happens before this, so slow filesystems do not count against it.
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(300);
  // Gloo's network interface; empty: GLOO_SOCKET_IFNAME when set, else this host's name, else
  // loopback (c10d's default device).
  std::string gloo_interface;
};

class ProcessGroup {
 public:
  // Joins the job described by `world`: a TCPStore at master_addr:master_port (rank 0 serves it
  // unless torchrun's agent already does; a world of one needs no port at all), a join barrier
  // that names the missing ranks on timeout, then the backend. `device` is this rank's device
  // (cuda:<local_rank> in training, or cpu).
  static std::unique_ptr<ProcessGroup> create(const WorldInfo& world, c10::Device device, const ProcessGroupOptions& opts = {});

  // Over an existing store (tests run ranks as threads sharing a HashStore or FileStore).
  ProcessGroup(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size, c10::Device device,
       const ProcessGroupOptions& opts = {});
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }
  c10::Device device() const { return device_; }
  const std::string& backend_name() const { return backend_name_; }
  std::chrono::milliseconds timeout() const { return opts_.timeout; }
  // What the group was created with (sub-groups are created with the same).
  const ProcessGroupOptions& options() const { return opts_; }
  // The raw c10d backend (prefer the *_async calls, which keep the named errors).
  const c10::intrusive_ptr<c10d::Backend>& backend() const { return backend_; }
  c10d::Store& store() const { return *store_; }
  // Collectives issued so far (0 in a world of one).
  int64_t collectives() const { return collectives_; }
  // Blocks until every collective issued so far has completed (NCCL; elsewhere they have when
  // waited), throwing the named error on a failure or timeout. Call before a host sync.
  void drain();
  // Wall time this rank's CPU has spent blocked in collectives so far (issuing them and waiting
  // for them): communication left exposed, not hidden behind compute.
  double comm_seconds() const { return comm_seconds_; }
  // Wall time during which at least one of this rank's collectives was in flight (issue to
  // completion, overlaps counted once), so 1 - exposed / in-flight is the share hidden behind
  // compute. Completion is when Gloo marks the work done on its own thread (its reduce-scatter is
  // run as the all-reduce it is inside Gloo, to observe that); NCCL's completion is on the GPU and
  // is not observed here, so this is NaN on NCCL.
  double inflight_seconds() const;

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

  // The same collectives, returned in flight. The tensors must not be touched until wait().
  Pending all_reduce_async(at::Tensor& t, Reduce op = Reduce::Sum, std::string_view what = "tensor");
  Pending all_gather_into_tensor_async(at::Tensor& out, const at::Tensor& in, std::string_view what = "tensor");
  Pending reduce_scatter_tensor_async(at::Tensor& out, const at::Tensor& in, std::string_view what = "tensor");

  // Tears the backend down; called by the destructor. After a failed collective the backend is
  // aborted rather than drained, so exiting never blocks on a dead peer.
  void shutdown();

 private:
  friend class Pending;
  struct Inflight {  // shared with the backend's completion callbacks, which may outlive a call
    std::mutex mu;
    int running = 0;
    std::chrono::steady_clock::time_point since;
    double seconds = 0;
  };

  void init_backend(const ProcessGroupOptions& opts);
  // The backend's name ("gloo" or "nccl") that `backend` resolves to on `device`; throws when it
  // cannot work there.
  static std::string check_backend_choice(Backend backend, c10::Device device);
  template <typename F>
  Pending issue(std::string_view op, std::string_view what, std::vector<at::Tensor> keep, F&& start);
  void finish(Pending& p);
  void track_inflight(const Pending& p);
  [[noreturn]] void fail_collective(const Pending& p, const std::exception& e);
  at::Tensor on_device(const at::Tensor& cpu) const;
  // What the backend is handed for `t`: contiguous, and a host copy where it cannot read the device.
  at::Tensor for_backend(const at::Tensor& t) const;
  bool local() const { return local_; }  // a world of one without a named backend: no communicator

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  bool local_ = false;
  int rank_ = 0;
  int world_size_ = 1;
  c10::Device device_{c10::kCPU};
  std::string backend_name_;
  ProcessGroupOptions opts_;
  std::chrono::milliseconds wait_limit_{0};
  bool failed_ = false;
  bool stage_on_host_ = false;
  double comm_seconds_ = 0;
  int64_t collectives_ = 0;
  c10::intrusive_ptr<c10d::Work> last_work_;
  std::string last_op_;
  std::chrono::steady_clock::time_point last_issued_;
  std::shared_ptr<Inflight> inflight_ = std::make_shared<Inflight>();
};

}  // namespace agenttune::parallel
