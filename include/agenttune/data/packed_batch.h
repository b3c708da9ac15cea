#pragma once
// What the trainer consumes: B sequences of T tokens packed from whole documents (T = seq_len,
// or less for a padded micro-batch cut to its longest row).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace agenttune {

struct PackedBatch {
  at::Tensor tokens;     // [B, T] int64
  at::Tensor targets;    // [B, T] int64, -100 = not trained
  at::Tensor positions;  // [B, T] int64, restarting at 0 at each document (and window) start
  at::Tensor doc_ids;    // [B, T] int64, equal within a document inside a row (for isolation)
  int64_t trained_tokens = 0;
  int64_t real_tokens = 0;  // tokens that are not padding, in this rank's rows
  std::vector<int64_t> source_tokens;  // trained tokens per mixture source
};

}  // namespace agenttune
