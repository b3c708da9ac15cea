// LoRA's device memory per rank on the fake device's allocator: the frozen base is held in the
// compute dtype (bf16) and sharded, at most one gathered unit more than its share per rank; only the
// adapters have fp32 masters and AdamW moments, so the optimizer holds nothing for the base; the
// step's peak is within 10 % of `agenttune plan`'s.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <mutex>

#include "agenttune/model/lora.h"
#include "agenttune/model/llama.h"
#include "agenttune/parallel/memory_plan.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/quant/nf4.h"
#include "agenttune/train/optimizer.h"
#include "fake_device.h"
#include "fake_device_step.h"
#include "thread_ranks.h"
#include "tiny_llama.h"

namespace fd = agenttune::testing::fake_device;
using namespace agenttune;
using namespace agenttune::parallel;

namespace {

LlamaConfig shape() { return agenttune::testing::tiny_llama(1024, 256, 704, 4, 8, 4, 256); }
constexpr int64_t kSeq = 128, kMicro = 2;
// What the last forward leaves on the device besides parameters and optimizer state: its unit
// inputs (rope tables, targets), which the engine keeps for a recomputing backward (~30 KB here).
constexpr int64_t kStepInputs = 64 << 10;

// `qlora`: the seven projections of every layer then hold NF4 records (quantize_projections).
LlamaForCausalLM lora_model(bool qlora = false) {
  auto m = make_llama(shape(), 5);
  add_adapters(m, AdapterConfig{.kind = qlora ? AdapterKind::Qlora : AdapterKind::Lora, .rank = 16});
  if (qlora) quantize_projections(m, /*quantise_values=*/true);
  return m;
}

struct Measured {
  int64_t state = 0;          // live after the step (grads dropped): base, adapters, moments
  int64_t base = 0;           // of which this rank's frozen buffers (bf16)
  int64_t base_nf4 = 0;       // and its frozen NF4 record bytes (QLoRA)
  int64_t adapter_state = 0;  // adapter fp32 masters + AdamW state, as the engine and optimizer report
  int64_t optimizer_numel = 0, adapter_numel = 0, adapter_groups = 0;
  int64_t gathered_adapters = 0;  // bf16 adapter weights the model computes on, still resident after the step
  int64_t peak_gathered = 0;      // most bf16 bytes gathered at once during the step (the engine's count)
  int64_t peak = 0;
};

// `agenttune plan`'s figures for the same run.
MemoryPlan plan_for(const std::string& strategy, int world, bool qlora = false) {
  MemoryPlanInput in;
  in.model = shape();
  in.strategy = parse_shard_strategy(strategy);
  in.world = world;
  in.gpus_per_node = world;
  in.seq_len = kSeq;
  in.micro_batch = kMicro;
  in.compute_dtype = at::kBFloat16;
  in.adapter = AdapterConfig{.kind = qlora ? AdapterKind::Qlora : AdapterKind::Lora, .rank = 16};
  return plan_memory(in);
}

Measured measure(const std::string& strategy, int world, bool qlora = false) {
  Measured m;
  std::mutex mu;
  fd::reset_all();
  agenttune::testing::run_ranks(
      world,
      [&](ProcessGroup& d, const WorldInfo& w) {
        const int dev = d.rank();
        // QLoRA's NF4 lookup tables (about 4 KB per device, made once per process) are not the step's.
        if (qlora) (void)quant::nf4_tables(fd::device(dev));
        const int64_t before = fd::counters(dev).live_bytes;
        ShardOptions o;
        o.strategy = parse_shard_strategy(strategy);
        o.compute_dtype = at::kBFloat16;
        ShardedModel sm(lora_model(qlora), d, w, o);
        AdamW opt(sm.shard_params(), {}, sm.shard_decay());
        agenttune::testing::measured_step(sm, opt, d, shape().vocab_size, kMicro, kSeq);
        const auto c = fd::counters(dev);
        if (d.rank() != 0) return;
        std::lock_guard<std::mutex> lock(mu);
        m.state = c.live_bytes - before;
        m.peak = c.peak_bytes - before;
        for (const auto& [name, t] : sm.frozen_shards()) {
          EXPECT_EQ(t.device(), fd::device(dev)) << name;
          if (qlora && t.scalar_type() == at::kByte) {
            m.base_nf4 += static_cast<int64_t>(t.nbytes());
            continue;
          }
          EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name;
          m.base += static_cast<int64_t>(t.nbytes());
        }
        for (const auto& [name, t] : sm.shard_params())
          m.adapter_numel += t.numel(), m.adapter_state += t.nbytes(), ++m.adapter_groups;
        for (const auto& p : sm.model()->parameters())
          if (p.requires_grad()) m.gathered_adapters += static_cast<int64_t>(p.nbytes());
        m.peak_gathered = sm.stats().peak_gathered_bytes;
        for (const auto& [name, t] : opt.state()) m.optimizer_numel += t.numel(), m.adapter_state += t.nbytes();
      },
      std::chrono::seconds(60), [](int r) { return fd::device(r); });
  return m;
}

TEST(LoraMemoryOnFakeDevice, TheBaseIsShardedInBf16AndHasNoOptimizerState) {
  auto whole = lora_model();
  int64_t base_numel = 0, layer = 0;
  for (const auto& p : whole->parameters()) base_numel += p.requires_grad() ? 0 : p.numel();
  for (const auto& p : whole->model->layers[0]->parameters()) layer += p.numel();  // base and adapters
  const int64_t head = shape().vocab_size * shape().hidden_size + shape().hidden_size;
  const int64_t largest_unit = std::max(layer, head), base_bf16 = 2 * base_numel;
  for (const auto& [strategy, world] : std::vector<std::pair<std::string, int>>{
           {"full_shard", 1}, {"full_shard", 2}, {"shard_grad_op", 2}, {"no_shard", 2}}) {
    const Measured m = measure(strategy, world);
    const MemoryPlan plan = plan_for(strategy, world);
    std::printf("[ figures  ] LoRA r16 %s world %d, rank 0: base %.3f MB (bf16 whole %.3f MB), adapters+AdamW %.3f MB, "
                "state after the step %.3f MB, step peak %.3f MB; plan %.3f MB (%+.1f%%)\n",
                strategy.c_str(), world, m.base / 1e6, base_bf16 / 1e6, m.adapter_state / 1e6, m.state / 1e6,
                m.peak / 1e6, plan.total() / 1e6, 100.0 * (static_cast<double>(m.peak) / plan.total() - 1));
    EXPECT_NEAR(static_cast<double>(m.peak) / plan.total(), 1.0, 0.10) << strategy << " " << world;
    // AdamW's moments cover the adapters only (two per adapter element, plus a step per group).
    EXPECT_EQ(m.optimizer_numel, 2 * m.adapter_numel + m.adapter_groups) << strategy << " " << world;
    EXPECT_EQ(m.adapter_groups, shape().num_hidden_layers) << "one adapter group per layer, nothing else trains";
    const bool sharded = strategy == "full_shard" && world > 1;
    // full_shard over 2 ranks: half the bf16 base (+ padding to the shard group); the resident
    // strategies hold it once, whole, in bf16.
    if (sharded) EXPECT_LE(m.base, base_bf16 / world + 2 * 8) << strategy;
    else EXPECT_EQ(m.base, base_bf16) << strategy << " " << world;
    // Everything the step left behind is the base, the adapters' state, the resident gathered
    // adapters (bf16) and the last forward's inputs: no fp32 copy of any base weight, no base grad.
    EXPECT_LE(m.state, m.base + m.adapter_state + m.gathered_adapters + kStepInputs) << strategy << " " << world;
    // Sharded, a rank gathers at most the unit it computes and the one it prefetches, in bf16.
    if (sharded) EXPECT_LE(m.peak_gathered, 2 * 2 * largest_unit + 64) << strategy;
  }
}

// QLoRA: the seven projections are held as NF4 records (about half a byte per weight), sharded like
// the rest of the base; embeddings, norms and the head stay bf16; the dense weights exist only while
// a projection's matmul runs, so none is left after the step.
TEST(LoraMemoryOnFakeDevice, QloraHoldsTheProjectionsAsNf4Records) {
  auto whole = lora_model(/*qlora=*/true);
  int64_t records = 0, projection_numel = 0, dense_numel = 0;
  for (const auto& p : whole->named_parameters()) {
    if (p.value().requires_grad()) continue;
    if (p.value().scalar_type() == at::kByte) records += p.value().numel();
    else dense_numel += p.value().numel();
  }
  for (const auto& m : whole->named_modules())
    if (const auto* proj = dynamic_cast<const ProjectionImpl*>(m.value().get()); proj && proj->quantized())
      projection_numel += proj->nf4_shape[0] * proj->nf4_shape[1];
  const double per_param = double(records) / double(projection_numel);
  std::printf("[ figures  ] QLoRA: %lld projection weights in %lld record bytes: %.4f bytes per weight\n",
              static_cast<long long>(projection_numel), static_cast<long long>(records), per_param);
  EXPECT_GT(per_param, 0.5);
  EXPECT_LT(per_param, 0.53);
  for (const auto& [strategy, world] : std::vector<std::pair<std::string, int>>{
           {"full_shard", 1}, {"full_shard", 2}, {"no_shard", 2}}) {
    const Measured m = measure(strategy, world, /*qlora=*/true);
    std::printf("[ figures  ] QLoRA r16 %s world %d, rank 0: NF4 base %.3f MB (whole %.3f MB, bf16 would be %.3f MB), "
                "bf16 embed/norms/head %.3f MB, adapters+AdamW %.3f MB, bf16 adapters %.3f MB, "
                "state after the step %.3f MB, step peak %.3f MB\n",
                strategy.c_str(), world, m.base_nf4 / 1e6, records / 1e6, 2 * projection_numel / 1e6, m.base / 1e6,
                m.adapter_state / 1e6, m.gathered_adapters / 1e6, m.state / 1e6, m.peak / 1e6);
    EXPECT_EQ(m.optimizer_numel, 2 * m.adapter_numel + m.adapter_groups) << strategy << " " << world;
    const bool sharded = strategy == "full_shard" && world > 1;
    if (sharded) {
      EXPECT_LE(m.base_nf4, records / world + 64) << strategy;
      EXPECT_LE(m.base, 2 * dense_numel / world + 2 * 8) << strategy;
    } else {
      EXPECT_EQ(m.base_nf4, records) << strategy << " " << world;
      EXPECT_EQ(m.base, 2 * dense_numel) << strategy << " " << world;
    }
    // No dense projection weight outlives its matmul: the records, the bf16 rest of the base and the
    // adapters' state are all the step leaves.
    EXPECT_LE(m.state, m.base_nf4 + m.base + m.adapter_state + m.gathered_adapters + kStepInputs)
        << strategy << " " << world;
  }
}

}  // namespace
