#include "agenttune/eval/target_scores.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "agenttune/model/loss.h"
#include "agenttune/util/error.h"

namespace agenttune::eval {

namespace {

void check(const std::vector<ScoredSequence>& seqs, int64_t batch_size) {
  if (batch_size <= 0) fail("score_targets: batch_size must be positive, got {}", batch_size);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto& s = seqs[i];
    if (s.ids.size() != s.scored.size())
      fail("score_targets: sequence {} has {} ids but {} scored flags", i, s.ids.size(), s.scored.size());
    if (!s.scored.empty() && s.scored[0] != 0)
      fail("score_targets: sequence {} scores its first token, which has no prefix to predict it from", i);
  }
}

// The scored sequences, longest first (less padding per batch), each trimmed after its last
// scored token: later tokens cannot change the scores.
std::vector<size_t> batch_order(const std::vector<ScoredSequence>& seqs, std::vector<size_t>& used_len) {
  std::vector<size_t> order;
  used_len.assign(seqs.size(), 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto& sc = seqs[i].scored;
    const auto last = std::find_if(sc.rbegin(), sc.rend(), [](uint8_t v) { return v != 0; });
    if (last == sc.rend()) continue;
    used_len[i] = static_cast<size_t>(sc.rend() - last);
    order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return used_len[a] > used_len[b]; });
  return order;
}

}  // namespace

TargetScores score_targets(EvalModel& model, const std::vector<ScoredSequence>& seqs, int64_t batch_size) {
  check(seqs, batch_size);
  std::vector<size_t> used_len;
  const auto order = batch_order(seqs, used_len);
  // Each scored token's slot in one flat vector, so one reduction gathers every rank's share.
  std::vector<int64_t> offset(seqs.size() + 1, 0);
  for (size_t i = 0; i < seqs.size(); ++i)
    offset[i + 1] = offset[i] + std::count_if(seqs[i].scored.begin(), seqs[i].scored.end(), [](uint8_t v) { return v; });
  auto flat = at::zeros({2, std::max<int64_t>(offset.back(), 1)}, at::kDouble);  // log p, greedy
  auto lp = flat.accessor<double, 2>();

  const auto n_batches = static_cast<int64_t>((order.size() + batch_size - 1) / batch_size);
  const int world = model.world_size(), rank = model.rank();
  const int64_t rounds = (n_batches + world - 1) / world;
  for (int64_t r = 0; r < rounds; ++r) {
    const int64_t b = r * world + rank;
    if (b >= n_batches) {  // keeps the collective calls in step with the ranks that have work
      const auto one = at::zeros({1, 1}, at::kLong);
      target_logprobs(model, one, one, {}, one);
      continue;
    }
    const auto first = static_cast<size_t>(b * batch_size);
    const auto last = std::min(order.size(), first + static_cast<size_t>(batch_size));
    std::vector<std::vector<int64_t>> rows;
    for (size_t k = first; k < last; ++k) {
      const auto& s = seqs[order[k]];
      rows.emplace_back(s.ids.begin(), s.ids.begin() + static_cast<int64_t>(used_len[order[k]]));
    }
    const auto batch = pad_batch(rows, /*left=*/false);
    auto targets = at::full(batch.tokens.sizes(), kIgnoreIndex, at::kLong);
    auto tg = targets.accessor<int64_t, 2>();
    for (size_t k = first; k < last; ++k) {
      const auto& s = seqs[order[k]];
      for (size_t t = 1; t < used_len[order[k]]; ++t)
        if (s.scored[t]) tg[static_cast<int64_t>(k - first)][static_cast<int64_t>(t - 1)] = s.ids[t];
    }
    at::Tensor greedy;
    const auto got = target_logprobs(model, batch.tokens, batch.positions, {}, targets, &greedy);
    auto g = got.accessor<float, 2>();
    auto gr = greedy.accessor<bool, 2>();
    for (size_t k = first; k < last; ++k) {
      const auto& s = seqs[order[k]];
      int64_t slot = offset[order[k]];
      const auto row = static_cast<int64_t>(k - first);
      for (size_t t = 1; t < used_len[order[k]]; ++t)
        if (s.scored[t]) {
          lp[0][slot] = g[row][static_cast<int64_t>(t - 1)];
          lp[1][slot++] = gr[row][static_cast<int64_t>(t - 1)] ? 1.0 : 0.0;
        }
    }
  }
  if (world > 1) {
    auto on_device = flat.to(model.device());
    model.sum_over_ranks(on_device);
    flat = on_device.cpu();
    lp = flat.accessor<double, 2>();
  }
  TargetScores out;
  out.logprobs.resize(seqs.size());
  out.greedy.resize(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i)
    for (int64_t slot = offset[i]; slot < offset[i + 1]; ++slot) {
      out.logprobs[i].push_back(lp[0][slot]);
      out.greedy[i].push_back(lp[1][slot] != 0 ? 1 : 0);
    }
  return out;
}

}  // namespace agenttune::eval
