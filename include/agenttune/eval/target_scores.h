#pragma once
// The one computation behind likelihood scoring and held-out loss: log p of chosen tokens of many
// sequences given their prefixes, batched (right padding, longest first) and shared out over the
// ranks of an EvalModel, gathered so every rank gets every number.
#include <cstdint>
#include <vector>

#include "agenttune/eval/eval_model.h"

namespace agenttune::eval {

struct ScoredSequence {
  std::vector<int64_t> ids;
  // scored[i] != 0: log p(ids[i] | ids[0..i-1]) is wanted (so scored[0] must be 0). Same length as ids.
  std::vector<uint8_t> scored;
};

// Per sequence, one entry per scored token, in sequence order.
struct TargetScores {
  std::vector<std::vector<double>> logprobs;
  std::vector<std::vector<uint8_t>> greedy;  // 1 = the token is the model's argmax there
};

// Collective on a sharded model: every rank passes the same `seqs` (batch b runs on rank
// b % world_size, a rank with fewer batches runs one-token batches) and gets all the scores.
// A sequence with nothing scored costs no model call. Throws naming the sequence for a scored[0]
// or a length mismatch.
TargetScores score_targets(EvalModel& model, const std::vector<ScoredSequence>& seqs, int64_t batch_size);

}  // namespace agenttune::eval
