// dist.offload and the alternatives search: offload moves the fp32 masters and AdamW moments off
// the device (and nothing else), the Llama-2-7B recipe fits one 80 GB GPU only with it, and the
// alternatives returned for a plan that does not fit each fit, are minimal, ordered, and cover
// every fitting change of the settings searched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fmt/ranges.h>

#include "agenttune/config/load.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/memory_plan.h"
#include "agenttune/train/data_resolution.h"
#include "agenttune/train/memory_check.h"
#include "agenttune/train/run_options.h"
#include "agenttune/train/train_config.h"
#include "test_paths.h"
#include "thread_ranks.h"

using namespace agenttune;
using namespace agenttune::parallel;

namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

LlamaConfig small() {
  LlamaConfig c;
  c.vocab_size = 1000, c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 3;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 256;
  return c;
}

MemoryPlanInput input(const LlamaConfig& c, ShardStrategy s, int world, c10::ScalarType dtype) {
  MemoryPlanInput in;
  in.model = c, in.strategy = s, in.world = world, in.gpus_per_node = 8;
  in.seq_len = 128, in.micro_batch = 2, in.grad_accum = 4, in.compute_dtype = dtype;
  return in;
}

// The 7B recipe as `agenttune train` would plan it at one GPU, with the architecture given (the
// checkpoint folder is not here).
MemoryPlanInput recipe_7b(const std::vector<std::string>& more = {}) {
  std::vector<std::string> overrides = {
      "model.init_from=", "model.shape={vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, "
                          "num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32}"};
  overrides.insert(overrides.end(), more.begin(), more.end());
  const auto cfg = load_config<TrainConfig>(agenttune::testing::source_dir() / "configs/agenttuning/agentlm_7b.yaml", overrides);
  return memory_plan_input(cfg, *cfg.model.shape, cfg.dist.strategy, 1, 1);
}

TEST(PlanOffload, MovesMastersMomentsAndTheGradCopyToTheHostAndNothingElse) {
  for (auto strategy : {ShardStrategy::FullShard, ShardStrategy::ShardGradOp, ShardStrategy::NoShard})
    for (int world : {1, 2})
      for (auto dtype : {at::kBFloat16, at::kFloat}) {
        auto in = input(small(), strategy, world, dtype);
        const auto on_device = plan_memory(in);
        in.offload = Offload::Optimizer;
        const auto off = plan_memory(in);
        const int64_t s = c10::elementSize(dtype);
        const bool per_unit = strategy == ShardStrategy::FullShard && world > 1;
        SCOPED_TRACE(shard_strategy_name(strategy) + " world " + std::to_string(world) + " " + c10::toString(dtype));
        EXPECT_EQ(on_device.host, 0);
        EXPECT_EQ(off.master, 0);
        EXPECT_EQ(off.optimizer, 0);
        // Host: the moments (+ steps) as the device held them, and pinned masters and grads, each
        // group's block at least its bytes and less than twice them (a power of two).
        EXPECT_GE(off.host, on_device.optimizer + 2 * on_device.master);
        EXPECT_LT(off.host, on_device.optimizer + 4 * on_device.master);
        EXPECT_EQ(off.shard_copy, per_unit ? s * off.shard_numel : 0);
        // fp32 at world 1 computed on the masters; with them on the host it needs its own copy.
        const int64_t extra_gathered = !per_unit && on_device.shard_world == 1 && s == 4 ? 4 * off.padded : 0;
        EXPECT_EQ(off.gathered, on_device.gathered + extra_gathered);
        EXPECT_EQ(off.grads(), on_device.grads());
        EXPECT_EQ(off.activations_peak, on_device.activations_peak);
        EXPECT_EQ(on_device.total() - off.total(),
                  on_device.master + on_device.optimizer - off.shard_copy - extra_gathered);
      }
}

TEST(PlanOffload, Llama2_7BRecipeFitsOne80GBGpuOnlyWithOffload) {
  const MemoryLimits gpu80{80 * kGiB, -1, false};
  const auto resident_in = recipe_7b();
  const auto resident = plan_memory(resident_in);
  const auto offload_in = recipe_7b({"dist.offload=optimizer"});
  const auto offload = plan_memory(offload_in);
  std::printf("[ figures  ] Llama-2-7B recipe (agentlm_7b.yaml, recompute %s) at 1 GPU: %.2f GiB without offload; "
              "%.2f GiB on the device + %.2f GiB of host memory with dist.offload=optimizer\n",
              enum_name(offload_in.recompute).c_str(), static_cast<double>(resident.total()) / kGiB,
              static_cast<double>(offload.total()) / kGiB, static_cast<double>(offload.host) / kGiB);
  EXPECT_EQ(resident_in.world, 1);
  EXPECT_EQ(resident_in.grad_accum, 64);  // the paper's batch of 64 sequences, one at a time
  EXPECT_FALSE(fits(resident, resident_in, gpu80));
  // fp32 masters + moments alone: 12 bytes per parameter, 6.74B parameters.
  EXPECT_GT(resident.master + resident.optimizer, 75 * kGiB);
  EXPECT_TRUE(fits(offload, offload_in, gpu80)) << offload.total() / kGiB << " GiB";
  // Moments: 8 bytes per parameter and a 4-byte step per flat group (the embedding's, two per layer,
  // two of the head's). Pinned masters and grads, each group in a power-of-two block: the embedding
  // and the head (131,072,000 x 4 bytes) in 512 MiB, a layer's matrices (202,375,168 x 4) in 1 GiB,
  // its norms (8,192 x 4) in 32 KiB, the final norm (4,096 x 4) in 16 KiB.
  const int64_t pinned = 2 * (int64_t{512} << 20) + 32 * ((int64_t{1} << 30) + (32 << 10)) + (16 << 10);
  EXPECT_EQ(offload.host, 2 * pinned + 8 * offload.shard_numel + 4 * (1 + 2 * 32 + 2));
  // A machine with 160 GiB of host memory holds the offloaded state (116 GiB); one with 64 GiB does not.
  EXPECT_TRUE(fits(offload, offload_in, {80 * kGiB, 160 * kGiB, false}));
  EXPECT_FALSE(fits(offload, offload_in, {80 * kGiB, 64 * kGiB, false}));
}

// dist.single_rank_path per_unit: a shard group of one planned as full_shard's per-unit path, byte
// for byte against the engine running it (masters, optimizer state, gathered units, shard grads).
TEST(PlanSingleRankPath, PerUnitAtWorldOneMatchesTheEngine) {
  for (auto dtype : {at::kBFloat16, at::kFloat}) {
    auto in = input(small(), ShardStrategy::FullShard, 1, dtype);
    in.micro_batch = 2, in.seq_len = 8;
    const auto resident = plan_memory(in);
    in.single_rank_path = SingleRankPath::PerUnit;
    const auto plan = plan_memory(in);
    SCOPED_TRACE(c10::toString(dtype));
    EXPECT_EQ(plan.gathered, c10::elementSize(dtype) * plan.largest_unit_pair_padded);
    EXPECT_LT(plan.gathered, c10::elementSize(dtype) * plan.padded);
    EXPECT_EQ(resident.gathered, dtype == at::kFloat ? 0 : c10::elementSize(dtype) * resident.padded);
    agenttune::testing::run_ranks(1, [&](ProcessGroup& d, const WorldInfo& w) {
      ShardOptions o;
      o.strategy = ShardStrategy::FullShard, o.compute_dtype = dtype, o.single_rank_path = SingleRankPath::PerUnit;
      ShardedModel sm(make_llama(small(), 3), d, w, o);
      int64_t master = 0;
      for (const auto& [name, t] : sm.shard_params()) master += t.numel() * static_cast<int64_t>(t.element_size());
      EXPECT_EQ(master, plan.master);
      EXPECT_EQ(sm.stats().peak_gathered_bytes, 0);  // nothing stays gathered after construction
      auto tokens = at::randint(3, 1000, {2, 8}, at::kLong);
      auto positions = at::arange(8, at::kLong).expand({2, 8}).contiguous();
      sm.loss_sum(tokens, positions, {}, labels_to_targets(tokens)).backward();
      sm.finish_backward();
      EXPECT_EQ(sm.stats().peak_gathered_bytes, plan.gathered);
      int64_t grads = 0;
      for (const auto& [name, t] : sm.shard_params()) grads += t.grad().numel() * static_cast<int64_t>(t.grad().element_size());
      EXPECT_EQ(grads, plan.shard_grads);
    });
  }
}

TEST(PlanFits, HostStateCountsEveryRankOfTheNodeAndCpuRanksShareOnePool) {
  auto in = input(small(), ShardStrategy::FullShard, 4, at::kBFloat16);
  in.offload = Offload::Optimizer;
  in.gpus_per_node = 2;
  const auto p = plan_memory(in);
  EXPECT_EQ(ranks_per_node(in), 2);
  EXPECT_EQ(host_bytes_needed(p, in, {}), 2 * p.host);
  EXPECT_EQ(host_bytes_needed(p, in, {0, 0, true}), 2 * (p.host + p.total()));
  const auto usable = [](int64_t bytes) { return static_cast<int64_t>(bytes / kUsableFraction) + 1; };
  EXPECT_TRUE(fits(p, in, {usable(p.total()), usable(2 * p.host), false}));
  EXPECT_FALSE(fits(p, in, {usable(p.total()) - 2, usable(2 * p.host), false}));
  EXPECT_FALSE(fits(p, in, {usable(p.total()), usable(2 * p.host) - 2, false}));
  EXPECT_TRUE(fits(p, in, {0, usable(2 * (p.host + p.total())), true}));
  EXPECT_FALSE(fits(p, in, {kGiB, usable(2 * (p.host + p.total())) - 2, true}));
}

int level(const Alternative& a) { return static_cast<int>(a.recompute); }

// Every alternative fits and keeps the global batch; none is dominated by another (changes no
// setting less far); they come least intrusive first; and every fitting combination of the
// searched settings is one of them or changes something further than one of them.
void expect_complete_minimal_and_ordered(const MemoryPlanInput& in, int64_t global_batch, const MemoryLimits& limits,
                                         const std::vector<Alternative>& alts) {
  ASSERT_FALSE(alts.empty());
  auto no_more_than = [](const Alternative& a, const Alternative& b) {
    return a.world <= b.world && a.offload <= b.offload && level(a) <= level(b) && a.micro_batch >= b.micro_batch;
  };
  for (size_t i = 0; i < alts.size(); ++i) {
    const auto& a = alts[i];
    EXPECT_TRUE(fits(a.plan, a.input, limits)) << i;
    EXPECT_EQ(a.plan.total(), plan_memory(a.input).total()) << i;
    EXPECT_EQ(a.input.micro_batch * a.input.world * a.input.grad_accum, global_batch) << i;
    EXPECT_TRUE(a.input.recompute == a.recompute && a.input.offload == a.offload &&
                a.input.micro_batch == a.micro_batch && a.input.world == a.world);
    for (size_t j = 0; j < alts.size(); ++j)
      if (i != j) EXPECT_FALSE(no_more_than(alts[j], a)) << j << " dominates " << i;
    if (i > 0) {
      const auto& b = alts[i - 1];
      EXPECT_LE(std::make_tuple(b.world, b.offload, level(b), -b.micro_batch),
                std::make_tuple(a.world, a.offload, level(a), -a.micro_batch)) << i;
    }
  }
  for (int world = in.world; world <= global_batch; ++world)
    for (int64_t micro = 1; micro <= in.micro_batch; ++micro)
      for (auto r : {Recompute::None, Recompute::Selective, Recompute::Full})
        for (auto o : {Offload::None, Offload::Optimizer}) {
          if (global_batch % (micro * world) != 0 || r < in.recompute || o < in.offload) continue;
          auto c = in;
          c.world = world, c.micro_batch = micro, c.recompute = r, c.offload = o;
          c.grad_accum = global_batch / (micro * world);
          const bool unchanged = world == in.world && micro == in.micro_batch && r == in.recompute && o == in.offload;
          if (unchanged || !fits(plan_memory(c), c, limits)) continue;
          const Alternative cand{r, o, micro, world, c, {}};
          EXPECT_TRUE(std::any_of(alts.begin(), alts.end(), [&](const Alternative& a) { return no_more_than(a, cand); }))
              << "world " << world << " micro " << micro << " " << enum_name(r) << " " << enum_name(o);
        }
}

TEST(PlanAlternatives, The7BRecipeOnOneGpuFitsWithOffloadFirstAndMoreGpusWithout) {
  const auto in = recipe_7b();
  const MemoryLimits limits{80 * kGiB, 512 * kGiB, false};
  const auto alts = fitting_alternatives(in, 64, limits);
  expect_complete_minimal_and_ordered(in, 64, limits, alts);
  for (const auto& a : alts)
    std::printf("[ figures  ] 7B alternative: %s on %d GPU(s): %.2f GiB device, %.2f GiB host\n",
                fmt::format("{}", fmt::join(alternative_overrides(in, a.input), " ")).c_str(), a.world,
                static_cast<double>(a.plan.total()) / kGiB, static_cast<double>(a.plan.host) / kGiB);
  EXPECT_EQ(alts.front().world, 1);
  EXPECT_EQ(alts.front().offload, Offload::Optimizer);
  // Without host memory for the offloaded state only more GPUs remain.
  const MemoryLimits small_host{80 * kGiB, 16 * kGiB, false};
  const auto gpus_only = fitting_alternatives(in, 64, small_host);
  expect_complete_minimal_and_ordered(in, 64, small_host, gpus_only);
  for (const auto& a : gpus_only) {
    EXPECT_GT(a.world, 1);
    EXPECT_EQ(a.offload, Offload::None);
  }
}

TEST(PlanAlternatives, ActivationBoundPlansGetRecomputeOrSmallerMicroBatches) {
  // Long sequences and a micro-batch of 8: activations dominate; the masters fit.
  auto in = input(small(), ShardStrategy::FullShard, 1, at::kBFloat16);
  in.seq_len = 256, in.micro_batch = 8, in.grad_accum = 2;
  const auto p = plan_memory(in);
  const MemoryLimits limits{static_cast<int64_t>(0.8 * static_cast<double>(p.total())), -1, false};
  ASSERT_FALSE(fits(p, in, limits));
  const auto alts = fitting_alternatives(in, 16, limits, {}, 2);
  ASSERT_FALSE(alts.empty());
  expect_complete_minimal_and_ordered(in, 16, limits, alts);
  EXPECT_EQ(alts.front().world, 1);
  EXPECT_EQ(alts.front().offload, Offload::None);
  EXPECT_TRUE(alts.front().micro_batch < 8 || alts.front().recompute != Recompute::None);
}

TEST(PlanAlternatives, OverridesNameTheConfigKeys) {
  auto from = input(small(), ShardStrategy::FullShard, 1, at::kBFloat16);
  auto to = from;
  EXPECT_TRUE(alternative_overrides(from, to).empty());
  to.recompute = Recompute::Selective, to.offload = Offload::Optimizer, to.micro_batch = 1, to.world = 4;
  EXPECT_EQ(alternative_overrides(from, to),
            (std::vector<std::string>{"model.activation_checkpointing=selective", "dist.offload=optimizer",
                                      "train.micro_batch_size=1"}));
  // Each override is a key `load_config` accepts and sets.
  const auto cfg = load_config<TrainConfig>(agenttune::testing::source_dir() / "configs/agenttuning/agentlm_7b.yaml",
                                            alternative_overrides(from, to));
  EXPECT_EQ(cfg.model.activation_checkpointing, Recompute::Selective);
  EXPECT_EQ(cfg.dist.offload, Offload::Optimizer);
  EXPECT_EQ(cfg.train.micro_batch_size, 1);
}

}  // namespace
