#pragma once
// Greedy decoding of many prompts together: each batch is left-padded (per-row positions, pad keys
// masked), prefilled in one forward and decoded one token per row per step through one KV cache.
// Rows that stop are dropped from the batch (their cache rows too), so a finished row costs
// nothing. The tokens equal generate()'s for each prompt alone (greedy).
//
// Host syncs: one per step (the step's new tokens and which rows stopped, read together). On a
// sharded model every rank runs the same number of batches and steps (agreed over the ranks; a
// rank with nothing left decodes a one-token dummy row), as its collectives require: agreeing
// whether any rank still runs is a second sync per step there.
#include <cstdint>
#include <vector>

#include "agenttune/eval/eval_model.h"

namespace agenttune::eval {

struct BatchGenerationOptions {
  int64_t max_new_tokens = 64;
  std::vector<int64_t> stop_ids;  // a row ends after emitting one of these (the template's and the model's eos)
  int64_t batch_size = 8;         // prompts decoded together
};

struct BatchGenerationResult {
  // Per prompt, in the order given: the new tokens, including a final stop id if one was hit.
  std::vector<std::vector<int64_t>> tokens;
  std::vector<bool> stopped;  // hit a stop id (vs. ran out of max_new_tokens)
  int64_t steps = 0;          // forwards run (prefills + decoding steps), this rank
  double seconds = 0;
};

// `prompts`: token ids (none empty, all inside the vocabulary). Prompts are batched longest first
// (less padding); results come back in the given order.
BatchGenerationResult generate_batch(EvalModel& model, const std::vector<std::vector<int64_t>>& prompts,
                                     const BatchGenerationOptions& opts);

}  // namespace agenttune::eval
