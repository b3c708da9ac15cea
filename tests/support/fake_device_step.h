#pragma once
// The memory tests' measured step: the rank's fake-device counters reset, then one trainer step
// (train_step) of a random pretraining micro-batch. Its figures are the step's alone.
#include <gtest/gtest.h>

#include "agenttune/train/step.h"
#include "fake_device.h"
#include "random_batch.h"

namespace agenttune::testing {

inline void measured_step(parallel::ShardedModel& sm, AdamW& opt, parallel::ProcessGroup& d, int64_t vocab, int64_t rows,
                          int64_t seq) {
  fake_device::reset(d.rank());
  auto g = at::make_generator<at::CPUGeneratorImpl>(11 + d.rank());
  PackedBatch b = random_batch(g, vocab, rows, seq);
  StepRequest req;
  req.lr = 1e-3;
  auto step = train_step(sm, opt, {b}, req, d);
  EXPECT_TRUE(step.judgement.applied()) << step.judgement.reason;
}

}  // namespace agenttune::testing
