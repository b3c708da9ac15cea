#include "agenttune/train/batch_prefetch.h"

#include <c10/core/DeviceGuard.h>

#include <utility>

namespace agenttune {

BatchPrefetch::BatchPrefetch(Mixture& data, const StepBatchShape& shape, c10::Device device)
    : data_(data), shape_(shape), device_(device), pin_(device.is_cuda()) {}

BatchPrefetch::~BatchPrefetch() {
  if (inflight_.valid()) inflight_.wait();
}

BatchPrefetch::Read BatchPrefetch::read() {
  Read r;
  for (int64_t i = 0; i < shape_.micro_batches; ++i) {
    r.batches.push_back(data_.next_batch(shape_.micro_batch_size, shape_.rank, shape_.world));
    if (pin_)
      for (at::Tensor* t : {&r.batches.back().tokens, &r.batches.back().targets, &r.batches.back().positions,
                            &r.batches.back().doc_ids})
        *t = t->pin_memory();
  }
  r.after = data_.state();
  return r;
}

void BatchPrefetch::settle() {
  if (!inflight_.valid()) return;
  try {
    ahead_ = inflight_.get();
  } catch (...) {
    error_ = std::current_exception();
  }
  data_.restore(before_);
}

std::vector<PackedBatch> BatchPrefetch::next(bool read_ahead) {
  settle();
  std::vector<PackedBatch> batches;
  const bool current = data_.state() == before_;
  if (error_ && current) std::rethrow_exception(std::exchange(error_, nullptr));
  if (ahead_ && current) {
    data_.restore(ahead_->after);
    batches = std::move(ahead_->batches);
  } else {
    batches = read().batches;
  }
  ahead_.reset();
  error_ = nullptr;
  if (read_ahead) {
    before_ = data_.state();
    inflight_ = std::async(std::launch::async, [this] {
      // Pinned host memory is allocated through the rank's device, never through device 0.
      c10::OptionalDeviceGuard guard;
      if (!device_.is_cpu()) guard.reset_device(device_);
      return read();
    });
  }
  return batches;
}

}  // namespace agenttune
