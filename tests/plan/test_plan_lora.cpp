// model.adapter in the plan: LoRA and QLoRA adapter counts and NF4 bytes against the published
// figures (the adapters fact sheet, shared/spec/adapters.md §5), the adapter state against a live
// ShardedModel, the frozen base sharded per strategy with no optimizer state, and the paper
// recipes' LoRA / QLoRA variants fitting the GPUs their configs name. (Device bytes of whole LoRA
// steps against the plan: tests/fake_device.)
#include <gtest/gtest.h>

#include "agenttune/config/load.h"
#include "agenttune/model/flops.h"
#include "agenttune/model/lora.h"
#include "agenttune/parallel/memory_plan.h"
#include "agenttune/train/run_options.h"
#include "agenttune/train/train_config.h"
#include "test_paths.h"
#include "thread_ranks.h"

using namespace agenttune;
using namespace agenttune::parallel;

namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

LlamaConfig llama2(int64_t D, int64_t F, int64_t L, int64_t H, int64_t KV) {
  LlamaConfig c;
  c.hidden_size = D, c.intermediate_size = F, c.num_hidden_layers = L;
  c.num_attention_heads = H, c.num_key_value_heads = KV;
  return c;
}

MemoryPlanInput adapted(const LlamaConfig& c, AdapterKind kind, int world, int64_t rank = 8) {
  MemoryPlanInput in;
  in.model = c, in.world = world, in.gpus_per_node = 8, in.seq_len = 4096;
  in.adapter.kind = kind, in.adapter.rank = rank;
  return in;
}

// The fact sheet's trainable counts (r = 8, all seven projections) and NF4 with double quantisation
// at 0.5 + 1/64 + 4/(64 * 256) bytes per weight, plus each record's 16-byte-aligned header.
TEST(PlanLora, AdapterCountsAndNf4BytesAreThePublishedOnes) {
  const auto c7 = llama2(4096, 11008, 32, 32, 32), c70 = llama2(8192, 28672, 80, 64, 8);
  EXPECT_EQ(plan_memory(adapted(c7, AdapterKind::Lora, 1)).numel, 19988480);
  EXPECT_EQ(plan_memory(adapted(c70, AdapterKind::Lora, 1)).numel, 103546880);
  EXPECT_EQ(plan_memory(adapted(c7, AdapterKind::Lora, 1, 64)).numel, 159907840);
  for (const auto& c : {c7, c70}) {
    const auto q = plan_memory(adapted(c, AdapterKind::Qlora, 1));
    const double projections = static_cast<double>(q.frozen_nf4_bytes);
    const double weights = static_cast<double>(count_parameters(c) - 2 * c.vocab_size * c.hidden_size -
                                               (2 * c.num_hidden_layers + 1) * c.hidden_size);
    EXPECT_NEAR(projections / weights, 0.5 + 1.0 / 64 + 4.0 / (64 * 256), 1e-4);
    // Embeddings, head and norms stay in the compute dtype.
    EXPECT_EQ(q.frozen_numel, 2 * c.vocab_size * c.hidden_size + (2 * c.num_hidden_layers + 1) * c.hidden_size);
  }
}

// The adapters' fp32 masters are the engine's trainable shards, byte for byte, at world 1 and a
// padded world 3; the base has no master, grad or moment: only the adapters' count.
TEST(PlanLora, AdapterStateMatchesTheEngineAndTheBaseHasNone) {
  LlamaConfig c;
  c.vocab_size = 97, c.hidden_size = 32, c.intermediate_size = 48, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 64;
  AdapterConfig adapter;
  adapter.kind = AdapterKind::Lora, adapter.rank = 3, adapter.target_modules = {"q_proj", "v_proj", "down_proj"};
  for (int world : {1, 3}) {
    auto in = adapted(c, AdapterKind::Lora, world);
    in.adapter = adapter, in.gpus_per_node = world, in.compute_dtype = at::kFloat;
    const auto plan = plan_memory(in);
    EXPECT_EQ(plan.numel, 2 * 3 * ((32 + 32) + (32 + 16) + (48 + 32)));
    EXPECT_EQ(plan.optimizer, 2 * plan.master + 4 * 2);  // two moments per master, a step per layer group
    EXPECT_EQ(plan.frozen_numel, count_parameters(c));
    agenttune::testing::run_ranks(world, [&](ProcessGroup& d, const WorldInfo& w) {
      auto model = make_llama(c, 3);
      add_adapters(model, adapter);
      ShardedModel sm(model, d, w, {});
      int64_t master = 0;
      for (const auto& [name, t] : sm.shard_params()) master += t.numel() * static_cast<int64_t>(t.element_size());
      EXPECT_EQ(master, plan.master) << "world " << world;
    });
  }
}

// The frozen bf16 base: whole where the strategy keeps units resident, 1/S per rank plus the
// gathered units under full_shard; QLoRA's about a quarter of LoRA's.
TEST(PlanLora, TheBaseIsShardedPerStrategy) {
  const auto c7 = llama2(4096, 11008, 32, 32, 32);
  const double bf16_base = 2.0 * static_cast<double>(count_parameters(c7));
  for (int world : {1, 2, 8}) {
    const auto lora = plan_memory(adapted(c7, AdapterKind::Lora, world));
    EXPECT_NEAR(static_cast<double>(lora.base), bf16_base / world, 1e-3 * bf16_base) << world;
    auto ddp = adapted(c7, AdapterKind::Lora, world);
    ddp.strategy = ShardStrategy::NoShard;
    EXPECT_NEAR(static_cast<double>(plan_memory(ddp).base), bf16_base, 1e-3 * bf16_base) << world;
    const auto qlora = plan_memory(adapted(c7, AdapterKind::Qlora, world));
    EXPECT_LT(static_cast<double>(qlora.base), 0.3 * static_cast<double>(lora.base)) << world;
    EXPECT_GT(qlora.dequantized, 0);
  }
}

MemoryPlanInput recipe(const std::string& config, const std::string& shape, int world,
                       const std::vector<std::string>& more = {}) {
  std::vector<std::string> overrides = {"model.init_from=", "model.shape=" + shape};
  overrides.insert(overrides.end(), more.begin(), more.end());
  const auto cfg = load_config<TrainConfig>(agenttune::testing::source_dir() / config, overrides);
  return memory_plan_input(cfg, *cfg.model.shape, cfg.dist.strategy, world, 8);
}

// The configs' LoRA / QLoRA recipes fit the GPUs they name (80 GB), as their comments say, and
// their full-tuning recipes do not there.
TEST(PlanLora, PaperRecipesFitWhereTheirConfigsSay) {
  const std::string s7 = "{vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, "
                         "num_attention_heads: 32, num_key_value_heads: 32}";
  const std::string s70 = "{vocab_size: 32000, hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, "
                          "num_attention_heads: 64, num_key_value_heads: 8}";
  const MemoryLimits gpu80{80 * kGiB, -1, false};
  auto fits_on = [&](const MemoryPlanInput& in) { return fits(plan_memory(in), in, gpu80); };
  EXPECT_TRUE(fits_on(recipe("configs/agenttuning/agentlm_7b_lora.yaml", s7, 1)));
  EXPECT_TRUE(fits_on(recipe("configs/agentflan/agentflan_7b_lora.yaml", s7, 1)));
  EXPECT_FALSE(fits_on(recipe("configs/agenttuning/agentlm_7b.yaml", s7, 1)));
  const auto qlora70 = recipe("configs/agenttuning/agentlm_70b_qlora.yaml", s70, 2);
  EXPECT_EQ(qlora70.adapter.kind, AdapterKind::Qlora);
  EXPECT_TRUE(fits_on(qlora70));
  // Less recompute does not fit there, nor does LoRA's bf16 base.
  EXPECT_FALSE(fits_on(recipe("configs/agenttuning/agentlm_70b_qlora.yaml", s70, 2,
                              {"model.activation_checkpointing=selective"})));
  EXPECT_FALSE(fits_on(recipe("configs/agenttuning/agentlm_70b_qlora.yaml", s70, 2, {"model.adapter.kind=lora"})));
}

}  // namespace
