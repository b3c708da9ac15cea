#pragma once
// A step's micro-batches read one step ahead: while step N trains, a thread reads step N+1's from
// the mixture (into pinned memory when the device is CUDA, so that their uploads are truly
// asynchronous copies). The mixture is used by one thread at a time: by the reader while a step
// trains, by the trainer between steps, after settle() has put the stream back where step N's
// batches left it. A checkpoint, the shares and a rollback see exactly that state, so a resume
// from step N starts at N+1's batches although they were already read.
#include <c10/core/Device.h>

#include <cstdint>
#include <exception>
#include <future>
#include <optional>
#include <vector>

#include "agenttune/data/mixture.h"
#include "agenttune/data/packed_batch.h"

namespace agenttune {

struct StepBatchShape {
  int64_t micro_batches = 1;
  int64_t micro_batch_size = 1;
  int rank = 0, world = 1;
};

class BatchPrefetch {
 public:
  BatchPrefetch(Mixture& data, const StepBatchShape& shape, c10::Device device);
  ~BatchPrefetch();  // waits for a read in flight
  BatchPrefetch(const BatchPrefetch&) = delete;
  BatchPrefetch& operator=(const BatchPrefetch&) = delete;

  // This step's batches: those read ahead when the stream is still where they were read from,
  // else read now. With read_ahead, the next step's read then starts on the thread, and the
  // mixture must not be used until settle(). A read-ahead's error is thrown here, for the step
  // it belongs to.
  std::vector<PackedBatch> next(bool read_ahead);
  // Waits for the read in flight, keeps its batches, and puts the mixture back at the state it
  // had before that read. The mixture may then be used and changed until the next call to next();
  // a change (a rollback to another position) makes next() read afresh from it.
  void settle();

 private:
  struct Read {
    std::vector<PackedBatch> batches;
    MixtureState after;  // the stream once they were read
  };
  Read read();

  Mixture& data_;
  StepBatchShape shape_;
  c10::Device device_;
  bool pin_;
  std::future<Read> inflight_;
  MixtureState before_;  // the stream when the read in flight (or settled) began
  std::optional<Read> ahead_;
  std::exception_ptr error_;
};

}  // namespace agenttune
