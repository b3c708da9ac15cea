#include "agenttune/parallel/host_syncs.h"

#include "agenttune/util/error.h"

#include <c10/util/Exception.h>
#ifdef USE_C10D_NCCL  // the wheel's CUDA build (torch_cuda exports it): c10_cuda is linked
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <atomic>

namespace agenttune::parallel {

namespace {

constexpr const char* kSyncWarning = "called a synchronizing CUDA operation";

// Takes c10's sync warnings and passes every other warning to the handler it replaced.
class CountingHandler : public c10::WarningHandler {
 public:
  void process(const c10::Warning& w) override {
    if (w.msg().find(kSyncWarning) == std::string::npos) {
      if (previous) previous->process(w);
      return;
    }
    if (count.fetch_add(1) == 0)
      first_site = std::string(w.source_location().file) + ":" + std::to_string(w.source_location().line) + " (" +
                   w.source_location().function + ")";
  }
  c10::WarningHandler* previous = nullptr;
  std::atomic<int64_t> count{0};
  std::string first_site;
};

}  // namespace

struct HostSyncCounter::Impl {
  CountingHandler handler;
  bool open = false;
};

HostSyncCounter::HostSyncCounter(c10::Device device) : impl_(std::make_unique<Impl>()) {
#ifndef USE_C10D_NCCL
  fail("metrics.host_syncs counts through CUDA's sync debug mode, and this build has no CUDA");
#endif
  if (device.is_cpu())
    fail("metrics.host_syncs counts the host waiting for an accelerator (CUDA's sync debug mode); on {} there is "
         "nothing to wait for: set it on a GPU run",
         device.str());
}

HostSyncCounter::~HostSyncCounter() {
  if (impl_->open) stop();
}

void HostSyncCounter::start() {
#ifdef USE_C10D_NCCL
  impl_->handler.count = 0;
  impl_->handler.first_site.clear();
  impl_->handler.previous = c10::WarningUtils::get_warning_handler();
  c10::WarningUtils::set_warning_handler(&impl_->handler);
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_WARN);
  impl_->open = true;
#endif
}

int64_t HostSyncCounter::stop() {
  if (!impl_->open) return 0;
#ifdef USE_C10D_NCCL
  c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  c10::WarningUtils::set_warning_handler(impl_->handler.previous);
#endif
  impl_->open = false;
  return impl_->handler.count.load();
}

const std::string& HostSyncCounter::first_site() const { return impl_->handler.first_site; }

}  // namespace agenttune::parallel
