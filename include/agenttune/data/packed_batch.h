#pragma once
// What the trainer consumes: B sequences of T tokens packed from whole documents.
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
  std::vector<int64_t> source_tokens;  // trained tokens per mixture source
};

}  // namespace agenttune
