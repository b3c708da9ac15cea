#include "fake_device.h"

#include <ATen/ATen.h>
#include <ATen/CPUFunctions.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/EmptyTensor.h>
#include <ATen/NativeFunctions.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/CPUFallback.h>
#include <ATen/native/DispatchStub.h>
#include <ATen/native/Resize.h>
#include <ATen/native/transformers/attention.h>
#include <ATen/SDPBackend.h>
#include <c10/core/Allocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>
#ifdef USE_C10D_NCCL  // the wheel's CUDA build: its sync debug switch is what a GPU run would use
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <fstream>
#include <sstream>
#include <unordered_set>

namespace agenttune::testing::fake_device {

namespace {

constexpr int kMaxDevices = 16;
void write_report();
constexpr auto kType = c10::DeviceType::PrivateUse1;

int initial_device_count() {
  const char* env = std::getenv("AGENTTUNE_FAKE_DEVICES");
  int n = env && *env ? std::atoi(env) : 2;
  return std::clamp(n, 0, kMaxDevices);
}

std::atomic<int> g_device_count{initial_device_count()};
thread_local c10::DeviceIndex t_current = 0;
// Inside the CPU fallback the copies to and from host memory are how a CPU kernel runs here, not
// transfers the code under test asked for.
thread_local int t_fallback_depth = 0;

struct DeviceCounters {
  std::mutex mu;
  Counters c;
};
std::array<DeviceCounters, kMaxDevices> g_counters;

DeviceCounters& of(int index) {
  TORCH_CHECK(index >= 0 && index < kMaxDevices, "fake device index ", index, " out of range");
  return g_counters[static_cast<size_t>(index)];
}

void count(int index, const std::function<void(Counters&)>& f) {
  if (t_fallback_depth > 0) return;
  auto& d = of(index);
  std::lock_guard<std::mutex> lock(d.mu);
  f(d.c);
}

// The host waits for the device here. Counted, and reported as CUDA reports it: c10's own
// warn_or_error_on_sync, which warns or throws only while CUDA's sync debug mode is on.
void host_sync(int index) {
  if (t_fallback_depth > 0) return;
  count(index, [](Counters& c) { ++c.host_syncs; });
#ifdef USE_C10D_NCCL
  c10::cuda::warn_or_error_on_sync();
#endif
}

// ---- memory ----

struct Block {
  size_t bytes;
  int device;
};

void release(void* ctx_ptr) {
  auto* ctx = static_cast<std::pair<void*, Block>*>(ctx_ptr);
  auto& d = of(ctx->second.device);
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.c.live_bytes -= static_cast<int64_t>(ctx->second.bytes);
  }
  c10::free_cpu(ctx->first);
  delete ctx;
}

// AGENTTUNE_FAKE_DEVICE_CAPACITY=BYTES gives every device that much memory (0 or unset: as much as
// the host has available).
int64_t initial_capacity() {
  const char* env = std::getenv("AGENTTUNE_FAKE_DEVICE_CAPACITY");
  return env && *env ? std::max<int64_t>(0, std::atoll(env)) : 0;
}
std::atomic<int64_t> g_capacity{initial_capacity()};

// MemAvailable and MemTotal from /proc/meminfo, in bytes (0 where unreadable).
std::pair<int64_t, int64_t> host_memory() {
  std::ifstream in("/proc/meminfo");
  int64_t available = 0, total = 0;
  std::string key, unit;
  for (int64_t kb = 0; in >> key >> kb;) {
    if (key == "MemAvailable:") available = kb * 1024;
    if (key == "MemTotal:") total = kb * 1024;
    std::getline(in, unit);
  }
  return {available, total};
}

std::string gib_text(int64_t bytes) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(2);
  os << static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0) << " GiB";
  return os.str();
}

// A device allocator as CUDA's is to LibTorch (c10::DeviceAllocator): code asks it for the device's
// free memory (getMemoryInfo) and its statistics, and an allocation beyond the capacity fails as
// CUDA's does, with c10::OutOfMemoryError ("CUDA out of memory. Tried to allocate ...").
struct FakeAllocator final : c10::DeviceAllocator {
  c10::DataPtr allocate(size_t n) override {
    const int dev = t_current;
    auto& d = of(dev);
    const int64_t capacity = g_capacity.load();
    {
      std::lock_guard<std::mutex> lock(d.mu);
      const int64_t live = d.c.live_bytes;
      if (capacity > 0 && live + static_cast<int64_t>(n) > capacity) {
        ++ooms_;
        TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate ",
                         gib_text(static_cast<int64_t>(n)), ". GPU ", dev, " has a total capacity of ",
                         gib_text(capacity), " of which ", gib_text(capacity - live), " is free. (fake device: ",
                         "AGENTTUNE_FAKE_DEVICE_CAPACITY)");
      }
      d.c.live_bytes += static_cast<int64_t>(n);
      d.c.peak_bytes = std::max(d.c.peak_bytes, d.c.live_bytes);
      ++d.c.allocations;
    }
    void* p = n > 0 ? c10::alloc_cpu(n) : nullptr;
    auto* ctx = new std::pair<void*, Block>(p, Block{n, dev});
    return {p, ctx, &release, c10::Device(kType, static_cast<c10::DeviceIndex>(dev))};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }

  bool initialized() override { return true; }
  void emptyCache(c10::MempoolId_t) override {}  // nothing is cached: every block goes back when freed
  void recordStream(const c10::DataPtr&, c10::Stream) override {}  // one in-order stream per device
  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex device) override {
    const Counters c = counters(device);
    c10::CachingDeviceAllocator::DeviceStats s;
    auto& bytes = s.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    bytes.current = c.live_bytes, bytes.peak = c.peak_bytes;
    s.allocation[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].allocated = c.allocations;
    s.num_ooms = ooms_.load();
    return s;
  }
  void resetAccumulatedStats(c10::DeviceIndex device) override {
    auto& d = of(device);
    std::lock_guard<std::mutex> lock(d.mu);
    d.c = Counters{d.c.live_bytes, d.c.peak_bytes};
  }
  void resetPeakStats(c10::DeviceIndex device) override {
    auto& d = of(device);
    std::lock_guard<std::mutex> lock(d.mu);
    d.c.peak_bytes = d.c.live_bytes;
  }
  // Free = capacity less what is allocated (without a capacity, the host's available memory).
  std::pair<size_t, size_t> getMemoryInfo(c10::DeviceIndex device) override {
    const int64_t capacity = g_capacity.load(), live = counters(device).live_bytes;
    if (capacity == 0) {
      const auto [available, total] = host_memory();
      return {static_cast<size_t>(available), static_cast<size_t>(total)};
    }
    return {static_cast<size_t>(std::max<int64_t>(0, capacity - live)), static_cast<size_t>(capacity)};
  }

 private:
  std::atomic<int64_t> ooms_{0};
};

FakeAllocator g_allocator;

// ---- device guard and hooks ----

struct FakeGuardImpl final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kType; }
  c10::Device exchangeDevice(c10::Device d) const override {
    auto old = getDevice();
    setDevice(d);
    return old;
  }
  c10::Device getDevice() const override { return {kType, t_current}; }
  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kType, "fake device guard given ", d);
    TORCH_CHECK(d.index() >= 0 && d.index() < g_device_count.load(), "invalid device ordinal: ", d, " (",
                g_device_count.load(), " fake device(s) visible)");
    t_current = d.index();
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override { t_current = d.index(); }
  c10::Stream getStream(c10::Device d) const override { return c10::Stream(c10::Stream::DEFAULT, d); }
  c10::Stream exchangeStream(c10::Stream s) const override { return c10::Stream(c10::Stream::DEFAULT, s.device()); }
  c10::DeviceIndex deviceCount() const noexcept override {
    return static_cast<c10::DeviceIndex>(g_device_count.load());
  }
  // One in-order stream per device, run synchronously: every event has completed when recorded.
  void record(void**, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {}
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  void destroyEvent(void*, const c10::DeviceIndex) const noexcept override {}
  bool queryStream(const c10::Stream&) const override { return true; }
  void synchronizeStream(const c10::Stream&) const override {}
};

struct FakeHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return g_device_count.load() > 0; }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override {
    return at::detail::getDefaultCPUGenerator();
  }
  at::Device getDeviceFromPtr(void*) const override { return {kType, t_current}; }
  bool isPinnedPtr(const void*) const override { return false; }
  c10::Allocator* getPinnedMemoryAllocator() const override { return c10::GetCPUAllocator(); }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  c10::DeviceIndex deviceCount() const override { return static_cast<c10::DeviceIndex>(g_device_count.load()); }
  void setCurrentDevice(c10::DeviceIndex d) const override { t_current = d; }
  c10::DeviceIndex getCurrentDevice() const override { return t_current; }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex d) const override { return std::exchange(t_current, d); }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex d) const override { return std::exchange(t_current, d); }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const override {
    at::native::resize_bytes_nocuda(storage, c10::SymInt(static_cast<int64_t>(newsize)));
  }
};

// ---- kernels the dispatcher needs natively ----

at::Tensor host_alias(const at::Tensor& t) {
  return at::from_blob(t.data_ptr(), t.sizes(), t.strides(), t.options().device(at::kCPU));
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                               std::optional<bool> pin, std::optional<c10::MemoryFormat> fmt) {
  const auto dev = c10::device_or_default(device);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided, "fake device: strided tensors only");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin), "pin_memory is for host tensors");
  const c10::DeviceGuard guard(dev);
  return at::detail::empty_generic(size, &g_allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                   c10::dtype_or_default(dtype), fmt);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                         std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                         std::optional<bool> pin) {
  const auto dev = c10::device_or_default(device);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided, "fake device: strided tensors only");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin), "pin_memory is for host tensors");
  const c10::DeviceGuard guard(dev);
  return at::detail::empty_strided_generic(size, stride, &g_allocator,
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           c10::dtype_or_default(dtype));
}

at::Tensor as_strided(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride,
                      std::optional<c10::SymInt> offset) {
  std::optional<int64_t> o;
  if (offset) o = offset->expect_int();
  return at::native::as_strided_tensorimpl(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride), o);
}

const at::Tensor& resize_(const at::Tensor& self, c10::SymIntArrayRef size, std::optional<at::MemoryFormat> fmt) {
  const c10::DeviceGuard guard(self.device());
  return at::native::resize_(self, C10_AS_INTARRAYREF_SLOW(size), fmt);
}

at::Tensor reshape_alias(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  return at::native::_reshape_alias(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride));
}

at::Tensor view(const at::Tensor& self, c10::SymIntArrayRef size) {
  return at::native::view(self, C10_AS_INTARRAYREF_SLOW(size));
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  const int64_t bytes = static_cast<int64_t>(self.numel()) * static_cast<int64_t>(self.element_size());
  // A blocking copy either way is cudaMemcpyAsync + a stream sync on CUDA (memcpy_and_sync): the
  // host waits. non_blocking does not wait (from pageable memory it stages, still unreported by CUDA).
  if (self.is_cpu() && !dst.is_cpu()) {
    count(dst.device().index(), [&](Counters& c) { c.h2d_bytes += bytes, ++c.h2d_copies; });
    if (!non_blocking) host_sync(dst.device().index());
  } else if (!self.is_cpu() && dst.is_cpu()) {
    count(self.device().index(), [&](Counters& c) { c.d2h_bytes += bytes, ++c.d2h_copies; });
    if (!non_blocking) host_sync(self.device().index());
  }
  at::Tensor d = dst.is_cpu() ? dst : host_alias(dst);
  at::Tensor s = self.is_cpu() ? self : host_alias(self);
  at::native::copy_(d, s, non_blocking);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  at::native::resize_(dst, self.sizes(), std::nullopt);
  return copy_from(self, dst, false);
}

at::Scalar local_scalar_dense(const at::Tensor& self) {
  count(self.device().index(), [&](Counters& c) {
    c.d2h_bytes += static_cast<int64_t>(self.element_size()), ++c.d2h_copies;
  });
  host_sync(self.device().index());
  return at::native::_local_scalar_dense_cpu(host_alias(self));
}

at::Tensor& set_tensor(at::Tensor& self, const at::Tensor& source) { return at::native::set_tensor_(self, source); }
at::Tensor& set_storage(at::Tensor& self, at::Storage source) { return at::native::set_(self, source); }
at::Tensor& set_storage_offset(at::Tensor& self, at::Storage storage, int64_t offset, c10::IntArrayRef size,
                               c10::IntArrayRef stride) {
  return at::cpu::set_(self, storage, offset, size, stride);
}

// LibTorch lets a CPU parameter take CUDA data (set_data, as Module::to does) but knows no
// PrivateUse1 backend as dense; here, as for CUDA, host and fake dense tensors are compatible.
bool compatible_shallow_copy(const at::Tensor& self, const at::Tensor& from) {
  auto dense_here = [](const at::Tensor& t) {
    return t.layout() == c10::kStrided && (t.is_cpu() || t.device().type() == kType);
  };
  if (dense_here(self) && dense_here(from)) return true;
  return self.unsafeGetTensorImpl()->has_compatible_shallow_copy_type(from.key_set());
}

// ---- every other op: the CPU kernel, after the checks CUDA would make ----

void collect_devices(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    if (v.toTensor().defined()) out.push_back(v.toTensor());
  } else if (v.isTensorList()) {
    for (const at::Tensor& t : v.toTensorList()) out.push_back(t);
  } else if (v.isList()) {
    for (const c10::IValue& e : v.toListRef()) collect_devices(e, out);
  }
}

// Ops whose output size depends on the data: on CUDA they copy a count to the host and wait.
bool syncs_host(const c10::OperatorName& op) {
  static const std::unordered_set<std::string> names = {
      "aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::unique_consecutive", "aten::unique_dim",
      "aten::equal", "aten::is_nonzero", "aten::repeat_interleave"};
  return names.count(op.name) > 0;
}

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const size_t n = schema.arguments().size();
  std::vector<at::Tensor> tensors;
  for (size_t i = stack->size() - n; i < stack->size(); ++i) collect_devices((*stack)[i], tensors);
  std::optional<c10::Device> fake, host;
  for (const auto& t : tensors) {
    if (t.device().type() == kType) {
      if (!fake) fake = t.device();
      else
        TORCH_CHECK(*fake == t.device(), "Expected all tensors to be on the same device, but found at least two "
                    "devices, ", *fake, " and ", t.device(), "! (when checking arguments of ", schema.name(), ")");
    } else if (t.is_cpu() && t.dim() > 0) {  // CUDA kernels accept 0-dim CPU tensors as scalars
      host = t.device();
    }
  }
  if (fake && host)
    TORCH_CHECK(false, "Expected all tensors to be on the same device, but found at least two devices, ", *fake,
                " and cpu! (when checking arguments of ", schema.name(), ")");
  if (fake && syncs_host(schema.operator_name())) host_sync(fake->index());
  ++t_fallback_depth;
  try {
    at::native::cpu_fallback(op, stack);
  } catch (...) {
    --t_fallback_depth;
    throw;
  }
  --t_fallback_depth;
}

// ---- attention: a fused kernel, as on CUDA ----
// scaled_dot_product_attention on a device without a choice of kernels decomposes into the math
// path, which keeps B·H·T·T scores that no GPU run holds (a seq-4096 probe would overstate its
// memory by gigabytes). The backend-choice hook (PyTorch's _fused_sdp_choice dispatch entry) sends
// it to the "overrideable" fused op, run here by the
// CPU flash kernel on the same memory: device memory holds what a fused kernel's does (output and
// logsumexp), and nothing counts as a transfer.

// With the kernel's strides: the fused kernels write the output [B, T, H, hd] and hand it back
// transposed, so o_proj reads it through a view (a contiguous copy would add one more B·T·H·hd
// tensor that each layer's graph keeps).
at::Tensor on_device_like(const at::Tensor& host, const at::Tensor& like) {
  auto out = at::empty_strided(host.sizes(), host.strides(), host.options().device(like.device()));
  host_alias(out).copy_(host);
  return out;
}

// GQA: the CPU kernel wants as many key/value heads as query heads.
at::Tensor repeat_kv(const at::Tensor& kv, int64_t heads) {
  const int64_t rep = heads / kv.size(1);
  return rep == 1 ? kv : kv.repeat_interleave(rep, 1);
}

at::Tensor fold_kv_grad(const at::Tensor& g, int64_t kv_heads) {
  const int64_t rep = g.size(1) / kv_heads;
  if (rep == 1) return g;
  return g.reshape({g.size(0), kv_heads, rep, g.size(2), g.size(3)}).sum(2);
}

int64_t fused_sdp_choice(const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                         double, bool, std::optional<double>, bool) {
  return static_cast<int64_t>(at::SDPBackend::overrideable);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, c10::SymInt, c10::SymInt, at::Tensor, at::Tensor, at::Tensor>
sdpa_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& bias,
             double dropout, bool causal, bool /*debug_mask*/, std::optional<double> scale) {
  std::optional<at::Tensor> mask;
  if (bias && bias->defined()) mask = host_alias(*bias);
  auto [out, lse] = at::_scaled_dot_product_flash_attention_for_cpu(
      host_alias(q), repeat_kv(host_alias(k), q.size(1)), repeat_kv(host_alias(v), q.size(1)), dropout, causal, mask,
      scale);
  at::Tensor none;
  return {on_device_like(out, q), on_device_like(lse, q), none, none, c10::SymInt(q.size(2)), c10::SymInt(k.size(2)),
          none, none, none};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sdpa_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
    std::array<bool, 4> /*grad_input_mask*/, const at::Tensor& out, const at::Tensor& lse, const at::Tensor&,
    const at::Tensor&, c10::SymInt, c10::SymInt, double dropout, bool causal, const at::Tensor&, const at::Tensor&,
    std::optional<double> scale) {
  std::optional<at::Tensor> mask;
  if (bias.defined()) mask = host_alias(bias);
  auto [gq, gk, gv] = at::_scaled_dot_product_flash_attention_for_cpu_backward(
      host_alias(grad_out), host_alias(q), repeat_kv(host_alias(k), q.size(1)), repeat_kv(host_alias(v), q.size(1)),
      host_alias(out), host_alias(lse), dropout, causal, mask, scale);
  return {on_device_like(gq, q), on_device_like(fold_kv_grad(gk, k.size(1)), k),
          on_device_like(fold_kv_grad(gv, v.size(1)), v), at::Tensor()};
}

// ---- registration, when the library is loaded ----

// AGENTTUNE_FAKE_DEVICE_REPORT=PREFIX: at exit, PREFIX.<RANK or 0>.json gets every device's
// counters, so a test can read what a process it launched (a rank of a real multi-process run) held.
void write_report() {
  const char* prefix = std::getenv("AGENTTUNE_FAKE_DEVICE_REPORT");
  if (!prefix || !*prefix) return;
  const char* rank = std::getenv("RANK");
  std::ofstream out(std::string(prefix) + "." + (rank && *rank ? rank : "0") + ".json");
  out << "{";
  for (int i = 0; i < g_device_count.load(); ++i) {
    const Counters c = counters(i);
    out << (i ? "," : "") << "\"" << i << "\":{\"peak_bytes\":" << c.peak_bytes << ",\"live_bytes\":" << c.live_bytes
        << ",\"host_syncs\":" << c.host_syncs << ",\"h2d_bytes\":" << c.h2d_bytes << ",\"d2h_bytes\":" << c.d2h_bytes
        << "}";
  }
  out << "}\n";
}

struct Registration {
  Registration() {
    c10::register_privateuse1_backend("fake");
    c10::SetAllocator(kType, &g_allocator);
    at::RegisterPrivateUse1HooksInterface(new FakeHooks());
    std::atexit(write_report);
  }
};
Registration g_registration;

}  // namespace

C10_REGISTER_GUARD_IMPL(PrivateUse1, FakeGuardImpl);

}  // namespace agenttune::testing::fake_device

// `_fused_sdp_choice_stub` is PyTorch's per-device dispatch table for that choice (a DispatchStub,
// its own name): registering the fake device's entry is the whole of the hook.
namespace at::native {
REGISTER_PRIVATEUSE1_DISPATCH(_fused_sdp_choice_stub, &agenttune::testing::fake_device::fused_sdp_choice)
}  // namespace at::native

namespace agenttune::testing::fake_device {

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", empty_memory_format);
  m.impl("empty_strided", empty_strided);
  m.impl("as_strided", as_strided);
  m.impl("resize_", resize_);
  m.impl("_reshape_alias", reshape_alias);
  m.impl("view", view);
  m.impl("_copy_from", copy_from);
  m.impl("_copy_from_and_resize", copy_from_and_resize);
  m.impl("_local_scalar_dense", local_scalar_dense);
  m.impl("set_.source_Tensor", set_tensor);
  m.impl("set_.source_Storage", set_storage);
  m.impl("set_.source_Storage_storage_offset", set_storage_offset);
  m.impl("_scaled_dot_product_fused_attention_overrideable", sdpa_forward);
  m.impl("_scaled_dot_product_fused_attention_overrideable_backward", sdpa_backward);
  // silu_backward has a composite definition (sigmoid and four more temporaries of the input's
  // size) that a device without its own kernel runs; CUDA runs one kernel that allocates only the
  // result, which the CPU kernel does here too.
  m.impl("silu_backward", torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

TORCH_LIBRARY_IMPL(aten, AutogradPrivateUse1, m) {
  m.impl("_has_compatible_shallow_copy_type", compatible_shallow_copy);
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>()); }

Counters counters(int index) {
  auto& d = of(index);
  std::lock_guard<std::mutex> lock(d.mu);
  return d.c;
}

void reset(int index) {
  auto& d = of(index);
  std::lock_guard<std::mutex> lock(d.mu);
  d.c = Counters{d.c.live_bytes, d.c.live_bytes};
}

void reset_all() {
  for (int i = 0; i < kMaxDevices; ++i) reset(i);
}

c10::Device device(int index) { return {kType, static_cast<c10::DeviceIndex>(index)}; }
int device_count() { return g_device_count.load(); }
void set_device_count(int n) { g_device_count = std::clamp(n, 0, kMaxDevices); }
int64_t capacity() { return g_capacity.load(); }
void set_capacity(int64_t bytes) { g_capacity = std::max<int64_t>(0, bytes); }

std::string describe(const Counters& c) {
  std::ostringstream os;
  os << "host_syncs=" << c.host_syncs << " h2d=" << c.h2d_bytes << " B (" << c.h2d_copies
     << " copies) d2h=" << c.d2h_bytes << " B (" << c.d2h_copies << " copies) live=" << c.live_bytes
     << " B peak=" << c.peak_bytes << " B";
  return os.str();
}

}  // namespace agenttune::testing::fake_device
