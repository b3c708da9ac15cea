#include "agenttune/parallel/process_group.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "agenttune/util/strings.h"

#ifndef USE_C10D_GLOO
#error "agenttune_parallel needs LibTorch built with Gloo (USE_C10D_GLOO comes with the torch CMake target)"
#endif

namespace agenttune::parallel {
namespace {

using ms = std::chrono::milliseconds;

std::string secs(ms t) { return fmt::format("{:g} s", t.count() / 1000.0); }

// c10 errors carry a backtrace in what(); users need the one-line cause.
std::string cause(const std::exception& e) {
  std::string msg = e.what();
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) msg = ce->what_without_backtrace();
  if (msg.size() > 600) msg = msg.substr(0, 600) + "...";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

bool looks_like_timeout(const std::string& msg) {
  for (const char* k : {"Timed out", "timed out", "Timeout", "timeout"})
    if (msg.find(k) != std::string::npos) return true;
  return false;
}

c10d::ReduceOp to_c10d(Reduce op) {
  switch (op) {
    case Reduce::Sum: return c10d::ReduceOp::SUM;
    case Reduce::Max: return c10d::ReduceOp::MAX;
    case Reduce::Min: return c10d::ReduceOp::MIN;
  }
  return c10d::ReduceOp::SUM;
}

std::string env_or(const char* key, std::string fallback) {
  const char* v = std::getenv(key);
  return v && *v ? std::string(v) : fallback;
}

// Every rank announces itself and waits for all others, so a rank that never starts is reported
// by number instead of surfacing later as an opaque backend timeout.
void join(c10d::Store& store, int rank, int world, ms timeout, const std::string& where) {
  std::vector<std::string> keys;
  for (int r = 0; r < world; ++r) keys.push_back(fmt::format("join/{}", r));
  try {
    store.set(keys[rank], std::vector<uint8_t>{1});
    store.wait(keys, timeout);
  } catch (const std::exception& e) {
    std::vector<int> missing;
    try {
      for (int r = 0; r < world; ++r)
        if (!store.check({keys[r]})) missing.push_back(r);
    } catch (const std::exception&) {
      fail("rank {} of {}: lost the rendezvous store{} while waiting for the other ranks: {}", rank, world, where,
           cause(e));
    }
    if (missing.empty()) fail("rank {} of {}: joining the group{} failed: {}", rank, world, where, cause(e));
    fail("rank {} of {}: rank{} {} did not join within {}{} (did {} start, and do all ranks agree on "
         "MASTER_ADDR/MASTER_PORT?)",
         rank, world, missing.size() > 1 ? "s" : "", fmt::join(missing, ", "), secs(timeout), where,
         missing.size() > 1 ? "they" : "it");
  }
}

}  // namespace

std::unique_ptr<ProcessGroup> ProcessGroup::create(const WorldInfo& world, c10::Device device, const ProcessGroupOptions& opts) {
  c10::intrusive_ptr<c10d::Store> store;
  const std::string where = fmt::format(" (store {}:{})", world.master_addr, world.master_port);
  if (world.world_size == 1 && !world.agent_store) {
    // Nobody to meet: an in-process store avoids claiming a port that another run may hold.
    store = c10::make_intrusive<c10d::HashStore>();
  } else {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(world.master_port);
    so.isServer = world.rank == 0 && !world.agent_store;
    so.numWorkers = world.world_size;
    so.waitWorkers = false;  // join() below names the ranks that are missing
    so.timeout = opts.connect_timeout;
    so.multiTenant = true;
    try {
      store = c10::make_intrusive<c10d::TCPStore>(world.master_addr, so);
    } catch (const std::exception& e) {
      if (so.isServer)
        fail("rank 0 of {}: could not start the rendezvous store on port {} (MASTER_PORT; is another job "
             "using it?): {}",
             world.world_size, world.master_port, cause(e));
      fail("rank {} of {}: could not reach the rendezvous store at {}:{} within {} (MASTER_ADDR/MASTER_PORT): {}",
           world.rank, world.world_size, world.master_addr, world.master_port, secs(opts.connect_timeout),
           cause(e));
    }
  }
  // torchrun reuses its agent's store across restarts; a per-attempt prefix keeps attempts apart.
  auto scoped = c10::make_intrusive<c10d::PrefixStore>(fmt::format("agenttune/{}", world.restart_count), store);
  join(*scoped, world.rank, world.world_size, opts.connect_timeout, where);
  auto d = std::make_unique<ProcessGroup>(scoped, world.rank, world.world_size, device, opts);
  log::info("dist: {} on {} via {}", world.describe(), device.str(), d->backend_name());
  return d;
}

ProcessGroup::ProcessGroup(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size, c10::Device device,
           const ProcessGroupOptions& opts)
    : store_(std::move(store)), rank_(rank), world_size_(world_size), device_(device), opts_(opts) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    fail("process group: rank {} is not within a world of {}", rank, world_size);
  join(*store_, rank_, world_size_, opts_.connect_timeout, "");
  check_backend_choice(opts.backend, device_);  // a wrong choice is wrong at any world size
  if (world_size_ == 1 && opts.backend == Backend::Auto) {
    // Nobody to talk to: every collective is the identity (or a copy), done in place below, so a
    // one-process run creates no communicator and never waits on one. A backend named explicitly
    // is created even so (the GPU suite runs NCCL this way on its one GPU).
    backend_name_ = "local";
    local_ = true;
    return;
  }
  init_backend(opts);
  // Gloo moves host memory (and CUDA); another device's tensors travel through host copies.
  stage_on_host_ = backend_name_ == "gloo" && !device_.is_cpu() && !device_.is_cuda();
  // Staging copies are issued non-blocking: the only such device is the test suite's fake one,
  // whose copies complete on return, and they stand in for NCCL moving device memory itself, so
  // they must not count as host syncs a GPU run would make.
  // Proves the backend can talk before any real work depends on it.
  barrier("startup");
}

ProcessGroup::~ProcessGroup() { shutdown(); }

std::string ProcessGroup::check_backend_choice(Backend backend, c10::Device device) {
  if (backend == Backend::Auto) backend = device.is_cuda() ? Backend::Nccl : Backend::Gloo;
  const std::string name = enum_name(backend);
  if (backend == Backend::Nccl && !device.is_cuda())
    fail("dist.backend 'nccl' needs a CUDA device; this rank runs on {} (use gloo)", device.str());
  return name;
}

void ProcessGroup::init_backend(const ProcessGroupOptions& opts) {
  const std::string name = check_backend_choice(opts.backend, device_);
  backend_name_ = name;
  try {
    if (name == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create(opts.timeout);
      // Gloo's own per-operation timeout reports first; the CPU wait limit is only a backstop.
      wait_limit_ = opts.timeout + std::chrono::seconds(10);
      std::string ifaces = opts.gloo_interface.empty() ? env_or("GLOO_SOCKET_IFNAME", "") : opts.gloo_interface;
      for (const auto& iface : split(ifaces, ','))
        if (!iface.empty()) o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
      if (o->devices.empty()) o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      auto prefixed = c10::make_intrusive<c10d::PrefixStore>("gloo", store_);
      backend_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank_, world_size_, o);
      return;
    }
#ifdef USE_C10D_NCCL
    // Collectives on high-priority streams: an all-gather or reduce-scatter overlapping a unit's
    // compute is scheduled ahead of that compute's kernels (FSDP2's and Megatron's choice).
    auto o = c10d::ProcessGroupNCCL::Options::create(/*is_high_priority_stream=*/true);
    // Our blocking wait (run()) throws at `timeout` with a message naming the collective; the
    // watchdog, which takes the whole process down, is only the backstop for work we never wait on.
    o->timeout = opts.timeout + std::chrono::seconds(10);
    wait_limit_ = opts.timeout;
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("nccl", store_);
    backend_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank_, world_size_, o);
    // Binding the device makes communicator creation eager and pins barrier() to this GPU.
    backend_->setBoundDeviceId(device_);
#else
    fail("dist.backend 'nccl' is not available: this LibTorch was built without NCCL");
#endif
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail("rank {} of {}: creating the {} process group failed: {}", rank_, world_size_, name, cause(e));
  }
}

void ProcessGroup::shutdown() {
  if (!backend_) return;
  try {
    // A failed group may have a peer that will never answer; abort instead of draining.
    if (failed_) backend_->abort();
    else backend_->shutdown();
  } catch (const std::exception& e) {
    log::warn("dist: rank {}: shutting down the {} group: {}", rank_, backend_name_, cause(e));
  }
  backend_.reset();
}

template <typename F>
Pending ProcessGroup::issue(std::string_view op, std::string_view what, std::vector<at::Tensor> keep, F&& start) {
  if (failed_) fail("{} of '{}' on rank {} of {}: the process group already failed", op, what, rank_, world_size_);
  if (!backend_) fail("{} of '{}' on rank {} of {}: the process group is shut down", op, what, rank_, world_size_);
  Pending p;
  p.dist_ = this;
  p.op_ = op;
  p.what_ = what;
  p.keep_ = std::move(keep);
  p.issued_ = std::chrono::steady_clock::now();
  try {
    p.work_ = start();
  } catch (const std::exception& e) {
    fail_collective(p, e);
  }
  if (backend_name_ == "gloo") track_inflight(p);
  ++collectives_;
  last_work_ = p.work_;
  last_op_ = fmt::format("{} of '{}'", op, what);
  last_issued_ = p.issued_;
  comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - p.issued_).count();
  return p;
}

// Gloo completes a work on its own thread and runs its future's callbacks there: that moment ends
// the collective's time in flight.
void ProcessGroup::track_inflight(const Pending& p) {
  auto inf = inflight_;
  {
    std::lock_guard<std::mutex> lock(inf->mu);
    if (inf->running++ == 0) inf->since = p.issued_;
  }
  p.work_->getFuture()->addCallback([inf](c10::ivalue::Future&) {
    std::lock_guard<std::mutex> lock(inf->mu);
    if (--inf->running == 0)
      inf->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - inf->since).count();
  });
}

void Pending::wait() {
  if (!work_.defined()) return;
  dist_->finish(*this);
}

void ProcessGroup::finish(Pending& p) {
  auto t0 = std::chrono::steady_clock::now();
  try {
    if (backend_name_ == "nccl") {
      // Stream-ordered: the current stream waits for the collective and the CPU runs on to queue
      // more work. A collective that never completes is caught by drain() at the step's host sync
      // (named, within the timeout) or by NCCL's watchdog (dist.timeout_s + 10 s).
      p.work_->wait();
    } else {
      // The limit counts from the issue, as if the caller had waited at once.
      auto left = std::max(ms(1), wait_limit_ - std::chrono::duration_cast<ms>(t0 - p.issued_));
      p.work_->wait(left);
    }
    comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } catch (const std::exception& e) {
    fail_collective(p, e);
  }
  p.work_.reset();
  p.keep_.clear();
  if (p.then_) std::exchange(p.then_, nullptr)();
}

void ProcessGroup::fail_collective(const Pending& p, const std::exception& e) {
  failed_ = true;
  auto took = std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - p.issued_);
  std::string msg = cause(e);
  const std::string name = p.what_.empty() ? p.op_ : fmt::format("{} of '{}'", p.op_, p.what_);
  if (looks_like_timeout(msg) || took >= opts_.timeout)
    fail("{} on rank {} of {} timed out after {} ({}: {})", name, rank_, world_size_,
         secs(opts_.timeout), backend_name_, msg);
  fail("{} on rank {} of {} failed after {:.1f} s ({}; a peer rank probably exited or lost its "
       "connection): {}",
       name, rank_, world_size_, took.count() / 1000.0, backend_name_, msg);
}

void ProcessGroup::drain() {
  if (!last_work_ || backend_name_ != "nccl") return;
  // Collectives on one communicator complete in issue order: the last one done means all are.
  Pending p;
  p.dist_ = this;
  p.work_ = last_work_;
  p.op_ = last_op_;
  p.issued_ = last_issued_;
  auto t0 = std::chrono::steady_clock::now();
  try {
    p.work_->wait(std::max(ms(1), wait_limit_ - std::chrono::duration_cast<ms>(t0 - p.issued_)));
  } catch (const std::exception& e) {
    fail_collective(p, e);
  }
  comm_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  last_work_.reset();
}

double ProcessGroup::inflight_seconds() const {
  if (backend_name_ != "gloo") return std::nan("");
  std::lock_guard<std::mutex> lock(inflight_->mu);
  double s = inflight_->seconds;
  if (inflight_->running > 0)
    s += std::chrono::duration<double>(std::chrono::steady_clock::now() - inflight_->since).count();
  return s;
}

at::Tensor ProcessGroup::on_device(const at::Tensor& cpu) const { return cpu.to(device_); }

at::Tensor ProcessGroup::for_backend(const at::Tensor& t) const {
  if (stage_on_host_ && !t.is_cpu()) return t.to(at::kCPU, /*non_blocking=*/true).contiguous();
  return t.is_contiguous() ? t : t.contiguous();
}

Pending ProcessGroup::all_reduce_async(at::Tensor& t, Reduce op, std::string_view what) {
  if (local()) return {};
  std::vector<at::Tensor> ts{for_backend(t)};
  c10d::AllreduceOptions o;
  o.reduceOp = to_c10d(op);
  auto p = issue("all_reduce", what, ts, [&] { return backend_->allreduce(ts, o); });
  if (!ts[0].is_same(t)) p.then_ = [t, c = ts[0]]() mutable { t.copy_(c, /*non_blocking=*/true); };
  return p;
}

void ProcessGroup::all_reduce(at::Tensor& t, Reduce op, std::string_view what) { all_reduce_async(t, op, what).wait(); }

double ProcessGroup::all_reduce(double value, Reduce op, std::string_view what) {
  if (local()) return value;
  auto t = on_device(at::full({1}, value, at::kDouble));
  all_reduce(t, op, what);
  drain();  // the host reads it next: a hung collective is named here, not left to NCCL's watchdog
  return t.item<double>();
}

void ProcessGroup::broadcast(at::Tensor& t, int root, std::string_view what) {
  if (root < 0 || root >= world_size_)
    fail("broadcast of '{}': root {} is not a rank of a world of {}", what, root, world_size_);
  if (local()) return;
  std::vector<at::Tensor> ts{for_backend(t)};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  issue("broadcast", what, ts, [&] { return backend_->broadcast(ts, o); }).wait();
  if (!ts[0].is_same(t)) t.copy_(ts[0], /*non_blocking=*/true);
}

void ProcessGroup::barrier(std::string_view what) {
  if (local()) return;
  c10d::BarrierOptions o;
  if (device_.is_cuda()) o.device_ids = {device_.index()};
  issue("barrier", what, {}, [&] { return backend_->barrier(o); }).wait();
}

Pending ProcessGroup::all_gather_into_tensor_async(at::Tensor& out, const at::Tensor& in, std::string_view what) {
  if (out.numel() != in.numel() * world_size_ || out.scalar_type() != in.scalar_type() || !out.is_contiguous())
    fail("all_gather_into_tensor of '{}': output must be contiguous {} with {} x {} elements, got {} {}", what,
         c10::toString(in.scalar_type()), world_size_, in.numel(), c10::toString(out.scalar_type()), out.numel());
  if (local()) {
    out.copy_(in);
    return {};
  }
  at::Tensor src = for_backend(in);
  at::Tensor dst = stage_on_host_ ? at::empty(out.sizes(), out.options().device(at::kCPU)) : out;
  // Staged, the device buffers stay alive until completion, as the backend would keep them.
  auto p = issue("all_gather_into_tensor", what, {dst, src, in, out}, [&] { return backend_->_allgather_base(dst, src); });
  if (!dst.is_same(out)) p.then_ = [out, dst]() mutable { out.copy_(dst, /*non_blocking=*/true); };
  return p;
}

void ProcessGroup::all_gather_into_tensor(at::Tensor& out, const at::Tensor& in, std::string_view what) {
  all_gather_into_tensor_async(out, in, what).wait();
}

Pending ProcessGroup::reduce_scatter_tensor_async(at::Tensor& out, const at::Tensor& in, std::string_view what) {
  if (in.numel() != out.numel() * world_size_ || out.scalar_type() != in.scalar_type() || !out.is_contiguous())
    fail("reduce_scatter_tensor of '{}': input must be {} with {} x {} elements, got {} {}", what,
         c10::toString(out.scalar_type()), world_size_, out.numel(), c10::toString(in.scalar_type()), in.numel());
  if (local()) {
    out.copy_(in);
    return {};
  }
  if (backend_name_ == "gloo") {
    // Gloo's own reduce-scatter is exactly this, an all-reduce of a copy and then this rank's
    // slice, but wrapped in a work that copies the slice inside wait() (so only one thread may
    // wait on it) and has no completion future. Done here, the sums are the same and the
    // all-reduce's completion is observed like every other collective's.
    std::vector<at::Tensor> buf{stage_on_host_ ? in.to(at::kCPU, /*non_blocking=*/true).contiguous()
                                               : in.clone(at::MemoryFormat::Contiguous)};
    if (buf[0].is_same(in)) buf[0] = in.clone(at::MemoryFormat::Contiguous);
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    auto p = issue("reduce_scatter_tensor", what, {out, buf[0], in}, [&] { return backend_->allreduce(buf, o); });
    p.then_ = [out, b = buf[0], n = world_size_, r = rank_]() mutable {
      out.copy_(b.chunk(n)[r], /*non_blocking=*/true);
    };
    return p;
  }
  at::Tensor src = in.contiguous();
  c10d::ReduceScatterOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  return issue("reduce_scatter_tensor", what, {out, src}, [&] { return backend_->_reduce_scatter_base(out, src, o); });
}

void ProcessGroup::reduce_scatter_tensor(at::Tensor& out, const at::Tensor& in, std::string_view what) {
  reduce_scatter_tensor_async(out, in, what).wait();
}

std::vector<std::string> ProcessGroup::all_gather_bytes(std::string_view bytes, std::string_view what) {
  if (local()) return {std::string(bytes)};
  // Lengths first, then one padded buffer per rank: the flat all-gather needs equal sizes.
  auto len = on_device(at::full({1}, static_cast<int64_t>(bytes.size()), at::kLong));
  auto lens = on_device(at::empty({world_size_}, at::kLong));
  all_gather_into_tensor(lens, len, what);
  drain();
  auto lens_cpu = lens.cpu();
  int64_t longest = std::max<int64_t>(1, lens_cpu.max().item<int64_t>());
  auto mine = at::zeros({longest}, at::kByte);
  std::memcpy(mine.data_ptr(), bytes.data(), bytes.size());
  auto all = on_device(at::empty({longest * world_size_}, at::kByte));
  auto src = on_device(mine);
  all_gather_into_tensor(all, src, what);
  drain();
  auto all_cpu = all.cpu();
  const char* p = static_cast<const char*>(all_cpu.data_ptr());
  std::vector<std::string> out;
  for (int r = 0; r < world_size_; ++r) out.emplace_back(p + r * longest, lens_cpu[r].item<int64_t>());
  return out;
}

}  // namespace agenttune::parallel
