// Gradient accumulation is fp32 on every path (issue 24): with bf16 compute, a step of 32
// micro-batches of one sequence must be as close to a float64 reference gradient as one
// micro-batch of 32 sequences, and the accumulated gradient must be the fp32 sum of the micro-batch
// gradients (a bf16 running sum, what autograd's .grad of a bf16 parameter gives, is ~1e-3 off).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include "agenttune/model/loss.h"
#include "agenttune/model/recompute.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/util/error.h"
#include "agenttune/parallel/sharded_model.h"
#include "thread_ranks.h"
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include "tiny_llama.h"

using namespace agenttune;
using namespace agenttune::parallel;

namespace {

LlamaConfig shape() { return agenttune::testing::tiny_llama(211, 64, 96, 2, 4, 2, 64); }
constexpr int64_t kSeqs = 32, kLen = 24;
constexpr uint64_t kSeed = 17;

struct Batch {
  at::Tensor tokens, targets, positions;
};

Batch global_batch() {
  auto g = at::make_generator<at::CPUGeneratorImpl>(4242);
  auto tokens = at::randint(3, shape().vocab_size, {kSeqs, kLen}, g, at::kLong);
  auto targets = labels_to_targets(tokens);
  targets.index_put_({at::indexing::Slice(0, kSeqs, 3), at::indexing::Slice(0, 4)}, kIgnoreIndex);
  return {tokens, targets, at::arange(kLen, at::kLong).expand({kSeqs, kLen}).contiguous()};
}

Batch rows(const Batch& b, int64_t from, int64_t n) {
  return {b.tokens.narrow(0, from, n), b.targets.narrow(0, from, n), b.positions.narrow(0, from, n)};
}

double denominator(const Batch& b) { return static_cast<double>(count_trained(b.targets)); }

// The reference: the same (fp32) weights in float64, the summed token loss in float64 (the model's
// norms and RoPE tables compute in fp32 inside, ~1e-7: far below bf16's ~1e-3), plain autograd.
std::map<std::string, at::Tensor> reference_grads(const Batch& b) {
  auto ref = make_llama(shape(), kSeed);
  ref->to(at::kDouble);
  auto logits = ref->forward(b.tokens, b.positions);
  auto loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), b.targets.reshape({-1}), {},
                                     at::Reduction::Sum, kIgnoreIndex);
  (loss / denominator(b)).backward();
  std::map<std::string, at::Tensor> out;
  for (auto& p : ref->named_parameters()) out[p.key()] = p.value().grad().detach().reshape({-1});
  return out;
}

// The shard grads (a shard group of one: whole groups) cut back into parameters by the layout.
std::map<std::string, at::Tensor> engine_grads(const ShardedModel& sm) {
  std::map<std::string, at::Tensor> out;
  auto layout = sm.layout();
  auto shards = sm.shard_params();
  for (size_t gi = 0; gi < shards.size(); ++gi) {
    const auto& grad = shards[gi].second.grad();
    for (const auto& p : layout["groups"][gi]["params"]) {
      int64_t numel = 1;
      for (int64_t d : p["shape"].get<std::vector<int64_t>>()) numel *= d;
      out[p["name"].get<std::string>()] = grad.narrow(0, p["offset"].get<int64_t>(), numel).to(at::kDouble);
    }
  }
  return out;
}

at::Tensor flat(const std::map<std::string, at::Tensor>& m) {
  std::vector<at::Tensor> parts;
  for (const auto& [name, t] : m) parts.push_back(t.to(at::kDouble).reshape({-1}));
  return at::cat(parts);
}

double rel_err(const at::Tensor& a, const at::Tensor& ref) { return ((a - ref).norm() / ref.norm()).item<double>(); }

// One step's gradient: the global batch in `micro` micro-batches (each loss divided by the step's
// trained tokens, as the trainer does), then finish_backward.
std::map<std::string, at::Tensor> accumulated(ShardedModel& sm, const Batch& b, int64_t micro) {
  const double denom = denominator(b);
  for (int64_t s = 0; s < kSeqs; s += micro) {
    auto mb = rows(b, s, micro);
    (sm.loss_sum(mb.tokens, mb.positions, {}, mb.targets) / denom).backward();
  }
  sm.finish_backward();
  auto g = engine_grads(sm);
  for (auto& [name, t] : sm.shard_params()) t.mutable_grad().reset();
  return g;
}

void run_world_one(const std::function<void(ProcessGroup&, const WorldInfo&)>& fn) {
  agenttune::testing::run_ranks(1, fn, std::chrono::seconds(120));
}

ShardOptions bf16_options() {
  ShardOptions o;
  o.strategy = ShardStrategy::FullShard;
  o.compute_dtype = at::kBFloat16;
  return o;
}

TEST(GradAccumulation, ThirtyTwoMicroBatchesAreAsCloseToFloat64AsOne) {
  const auto b = global_batch();
  const auto ref = flat(reference_grads(b));
  run_world_one([&](ProcessGroup& d, const WorldInfo& w) {
    ShardedModel sm(make_llama(shape(), kSeed), d, w, bf16_options());
    const double one = rel_err(flat(accumulated(sm, b, kSeqs)), ref);
    const double many = rel_err(flat(accumulated(sm, b, 1)), ref);
    std::printf("[ figures  ] bf16 compute vs float64 gradient: 1 micro-batch of %ld: %.4e, %ld micro-batches of 1: "
                "%.4e (ratio %.3f)\n",
                static_cast<long>(kSeqs), one, static_cast<long>(kSeqs), many, many / one);
    EXPECT_GT(one, 0.0);
    EXPECT_LE(many / one, 1.5);
  });
}

TEST(GradAccumulation, TheStepGradientIsTheFp32SumOfTheMicroBatchGradients) {
  const auto b = global_batch();
  run_world_one([&](ProcessGroup& d, const WorldInfo& w) {
    ShardedModel sm(make_llama(shape(), kSeed), d, w, bf16_options());
    // Each micro-batch alone (its gradient is exact in fp32: one bf16 backward), summed in float64.
    const double denom = denominator(b);
    at::Tensor sum;
    for (int64_t s = 0; s < kSeqs; ++s) {
      auto mb = rows(b, s, 1);
      (sm.loss_sum(mb.tokens, mb.positions, {}, mb.targets) / denom).backward();
      sm.finish_backward();
      auto g = flat(engine_grads(sm));
      for (auto& [name, t] : sm.shard_params()) t.mutable_grad().reset();
      sum = sum.defined() ? sum + g : g;
    }
    const double err = rel_err(flat(accumulated(sm, b, 1)), sum);
    std::printf("[ figures  ] %ld accumulated bf16 micro-batch gradients vs their float64 sum: %.3e\n",
                static_cast<long>(kSeqs), err);
    EXPECT_LT(err, 1e-6);  // fp32 rounding of 32 additions; a bf16 running sum is ~1e-3
  });
}

// dist.single_rank_path per_unit: a shard group of one gathers, frees and reduce-scatters per unit
// through a real backend (Gloo over one rank) and gives the resident path's bits: the same casts,
// the same per-micro-batch grads and the same fp32 sums, only moved through collectives.
struct Trace {
  std::vector<double> losses;
  std::vector<at::Tensor> shards;
};

Trace train_steps(SingleRankPath path, c10::ScalarType dtype, Recompute recompute) {
  ProcessGroupOptions po;
  po.backend = Backend::Gloo;
  ProcessGroup d(c10::make_intrusive<c10d::HashStore>(), 0, 1, at::kCPU, po);
  WorldInfo w;
  ShardOptions o;
  o.strategy = ShardStrategy::FullShard;
  o.compute_dtype = dtype;
  o.single_rank_path = path;
  auto model = make_llama(shape(), kSeed);
  model->recompute = recompute;
  ShardedModel sm(model, d, w, o);
  AdamW opt(sm.shard_params(), {}, sm.shard_decay());
  const auto b = global_batch();
  Trace t;
  const auto sb = rows(b, 0, 8);  // the same batch each step: the loss must fall
  for (int step = 0; step < 3; ++step) {
    const double denom = denominator(sb);
    double loss = 0;
    for (int64_t s = 0; s < 8; s += 4) {  // two micro-batches
      auto mb = rows(sb, s, 4);
      auto sum = sm.loss_sum(mb.tokens, mb.positions, {}, mb.targets);
      (sum / denom).backward();
      loss += sum.item<double>();
    }
    sm.finish_backward();
    sm.clip_grad_norm(1.0);
    opt.step(1e-2);
    sm.after_optimizer_step();
    opt.zero_grad();
    t.losses.push_back(loss);
  }
  for (auto& [name, s] : sm.shard_params()) t.shards.push_back(s.detach().clone());
  if (path == SingleRankPath::PerUnit) {  // it did run per unit: prefetched, never all units at once
    EXPECT_GT(sm.stats().prefetches, 0);
    EXPECT_LE(sm.stats().peak_resident_units, 2);
  }
  return t;
}

TEST(SingleRankPath, PerUnitThroughGlooIsBitIdenticalToResident) {
  for (auto dtype : {at::kFloat, at::kBFloat16})
    for (auto recompute : {Recompute::None, Recompute::Full}) {
      const auto resident = train_steps(SingleRankPath::Resident, dtype, recompute);
      const auto per_unit = train_steps(SingleRankPath::PerUnit, dtype, recompute);
      const std::string what = std::string(c10::toString(dtype)) + " recompute " + enum_name(recompute);
      EXPECT_EQ(per_unit.losses, resident.losses) << what;
      ASSERT_EQ(per_unit.shards.size(), resident.shards.size());
      for (size_t i = 0; i < resident.shards.size(); ++i)
        EXPECT_TRUE(at::equal(per_unit.shards[i], resident.shards[i])) << what << " group " << i;
      EXPECT_LT(resident.losses.back(), resident.losses.front()) << what;  // it trains
    }
}

TEST(SingleRankPath, PerUnitIsRefusedWhereParametersStayResident) {
  ProcessGroup d(c10::make_intrusive<c10d::HashStore>(), 0, 1, at::kCPU, {});
  for (auto strategy : {ShardStrategy::NoShard, ShardStrategy::ShardGradOp}) {
    ShardOptions o;
    o.strategy = strategy;
    o.single_rank_path = SingleRankPath::PerUnit;
    try {
      ShardedModel sm(make_llama(shape(), kSeed), d, WorldInfo{}, o);
      ADD_FAILURE() << "per_unit accepted with " << shard_strategy_name(strategy);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("single_rank_path"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
