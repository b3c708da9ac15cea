#pragma once
// A pretraining micro-batch of random tokens for the device tests: `rows` whole causal sequences
// of `seq` tokens, every next token trained.
#include <ATen/ATen.h>

#include "agenttune/data/packed_batch.h"
#include "agenttune/model/loss.h"

namespace agenttune::testing {

inline PackedBatch random_batch(at::Generator& g, int64_t vocab, int64_t rows, int64_t seq) {
  PackedBatch b;
  b.tokens = at::randint(0, vocab, {rows, seq}, g, at::kLong);
  b.positions = at::arange(seq, at::kLong).expand({rows, seq}).contiguous();
  b.targets = labels_to_targets(b.tokens);
  b.doc_ids = at::zeros({rows, seq}, at::kLong);
  b.trained_tokens = rows * (seq - 1), b.real_tokens = rows * seq;
  return b;
}

}  // namespace agenttune::testing
