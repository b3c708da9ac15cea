#pragma once
// Where a run stands, besides the model, optimizer and data cursors: what a checkpoint records for
// an exact resume (train/train_state.h saves and loads it) and what the trainer's loop advances.
#include <cstdint>
#include <vector>

namespace agenttune {

struct TrainProgress {
  int64_t step = 0;    // completed optimizer steps
  int64_t tokens = 0;  // tokens consumed (all ranks)
  int64_t nonfinite_in_a_row = 0;
  std::vector<double> loss_window;  // the spike detector's accepted losses (train/loss_spike.h)
};

}  // namespace agenttune
