// plan_memory against what the engine really holds: parameter, grad and optimizer bytes are
// counted on a live ShardedModel + AdamW (world 1 and a padded world 3), activation bytes with a
// counting CPU allocator around forward; then sanity checks at Llama-2 scale and hand-computed
// communication volumes.
#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>

#include "thread_ranks.h"
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <mutex>
#include <unordered_map>
#include <thread>

#include "agenttune/parallel/memory_plan.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/optimizer.h"

using namespace agenttune;
using namespace agenttune::parallel;

namespace {

LlamaConfig tiny(int64_t kv_heads = 2) {
  LlamaConfig c;
  c.vocab_size = 97, c.hidden_size = 32, c.intermediate_size = 48, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = kv_heads, c.max_position_embeddings = 64;
  return c;
}

LlamaConfig llama2(int64_t D, int64_t F, int64_t L, int64_t H, int64_t KV) {
  LlamaConfig c;
  c.hidden_size = D, c.intermediate_size = F, c.num_hidden_layers = L;
  c.num_attention_heads = H, c.num_key_value_heads = KV;
  return c;
}

int64_t bytes(const at::Tensor& t) { return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0; }

// Wraps the CPU allocator and tracks live bytes, so a test sees what autograd keeps alive. The
// state is static: tensors allocated while counting may be freed after the scope ends.
class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    void* p = base()->raw_allocate(n);
    if (p != nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[p] = static_cast<int64_t>(n);
      live_ += static_cast<int64_t>(n);
    }
    return {p, p, &release, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
  static c10::Allocator*& base() {
    static c10::Allocator* b = c10::GetCPUAllocator();
    return b;
  }
  static int64_t live() {
    std::lock_guard<std::mutex> lock(mu_);
    return live_;
  }

 private:
  static void release(void* p) {
    if (p == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(p);
      live_ -= it->second;
      sizes_.erase(it);
    }
    base()->raw_deleter()(p);
  }
  static inline std::mutex mu_;
  static inline std::unordered_map<void*, int64_t> sizes_;
  static inline int64_t live_ = 0;
};

// Live bytes allocated since construction (and still alive) while this scope counts.
class CountingScope {
 public:
  CountingScope() : start_((CountingAllocator::base(), CountingAllocator::live())) { c10::SetCPUAllocator(&alloc(), 0); }
  ~CountingScope() { c10::SetCPUAllocator(CountingAllocator::base(), 0); }
  int64_t live() const { return CountingAllocator::live() - start_; }

 private:
  static CountingAllocator& alloc() {
    static CountingAllocator a;
    return a;
  }
  int64_t start_;
};

using agenttune::testing::run_ranks;

MemoryPlanInput input(const LlamaConfig& c, ShardStrategy s, int world, c10::ScalarType dtype, int64_t B, int64_t T) {
  MemoryPlanInput in;
  in.model = c;
  in.strategy = s;
  in.world = world;
  in.gpus_per_node = world;
  in.seq_len = T;
  in.micro_batch = B;
  in.compute_dtype = dtype;
  return in;
}

struct Batch {
  at::Tensor tokens, targets, positions;
};

Batch batch(int64_t B, int64_t T) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(7);
  auto tokens = at::randint(3, 97, {B, T}, g, at::kLong);
  // Positions restart mid-row as packed training data's do: the tables are then the batch's own
  // (the plan's `rope`); a plain run 0..T-1 would read the model's cached table (model/rope.h).
  auto positions = at::cat({at::arange(T / 2, at::kLong), at::arange(T - T / 2, at::kLong)});
  return {tokens, labels_to_targets(tokens), positions.expand({B, T}).contiguous()};
}

class EngineBytes : public ::testing::TestWithParam<std::string> {};

// Master shards, resident or per-unit gathered params, AdamW state and grads, byte for byte, at
// world 1 (every strategy resident: a shard group of one) and world 2 (full and hybrid_shard
// gather per unit), untied and tied (the table held once, gathered for the embedding and the head).
TEST_P(EngineBytes, ParamsGradsOptimizerMatchTheEngineAtWorldOneAndTwo) {
  const auto strategy = parse_shard_strategy(GetParam());
  const auto dtype = at::kBFloat16;
  const int64_t B = 2, T = 8;
  for (bool tied : {false, true})
  for (int world : {1, 2}) {
  SCOPED_TRACE(::testing::Message() << "tied " << tied << " world " << world);
  auto shape = tiny();
  shape.tie_word_embeddings = tied;
  auto plan_in = input(shape, strategy, world, dtype, B, T);
  plan_in.gpus_per_node = world;
  plan_in.hybrid_group_size = world;
  auto plan = plan_memory(plan_in);
  ShardOptions o;
  o.strategy = strategy, o.compute_dtype = dtype, o.hybrid_group_size = world;
  // The engine's peak without prefetch, measured over a step in a world of its own (two engines
  // on one store would share their sub-groups' names).
  int64_t one_unit_peak = 0;
  run_ranks(world, [&](ProcessGroup& d, const WorldInfo& w) {
    auto no_prefetch = o;
    no_prefetch.prefetch = false;
    ShardedModel sm(make_llama(shape, 3), d, w, no_prefetch);
    auto b = batch(B, T);
    sm.loss_sum(b.tokens, b.positions, {}, b.targets).backward();
    sm.finish_backward();
    if (d.is_main()) one_unit_peak = sm.stats().peak_gathered_bytes;
  });
  run_ranks(world, [&](ProcessGroup& d, const WorldInfo& w) {
    ShardedModel sm(make_llama(shape, 3), d, w, o);
    int64_t master = 0;
    for (const auto& [name, t] : sm.shard_params()) master += bytes(t);
    EXPECT_EQ(master, plan.master);
    // What construction left gathered: every unit for the resident strategies, none per unit.
    const int64_t resident = sm.stats().peak_gathered_bytes;
    const bool per_unit = world > 1 && (strategy == ShardStrategy::FullShard || strategy == ShardStrategy::HybridShard);
    if (per_unit) {
      EXPECT_EQ(resident, 0);
      // One unit at a time without prefetch; the engine's measured peak with it is checked below.
      auto in = plan_in;
      in.prefetch = false;
      EXPECT_EQ(one_unit_peak, plan_memory(in).gathered);
      EXPECT_LT(one_unit_peak, plan.gathered);
    } else {
      EXPECT_EQ(resident, plan.gathered);
    }
    AdamW opt(sm.shard_params(), {}, sm.shard_decay());
    int64_t state = 0;
    for (const auto& [name, t] : opt.state()) state += bytes(t);
    EXPECT_EQ(state, plan.optimizer);

    auto b = batch(B, T);
    sm.loss_sum(b.tokens, b.positions, {}, b.targets).backward();
    // Each unit's grads are folded into the fp32 accumulators in its own backward: the module
    // parameters never hold any (the plan's compute_grads is one unit's, transient).
    int64_t module_grads = 0;
    for (const auto& p : sm.model()->parameters()) module_grads += bytes(p.grad());
    EXPECT_EQ(module_grads, 0);
    sm.finish_backward();
    // What forward + backward really held gathered at once (two neighbouring units with prefetch).
    EXPECT_EQ(sm.stats().peak_gathered_bytes, plan.gathered);
    int64_t shard_grads = 0;
    for (const auto& [name, t] : sm.shard_params()) shard_grads += bytes(t.grad());
    EXPECT_EQ(shard_grads, plan.shard_grads) << "world " << world;
  });
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, EngineBytes,
                         ::testing::Values("full_shard", "shard_grad_op", "no_shard", "hybrid_shard"),
                         [](const auto& info) { return info.param; });

// World 3 pads every group (97*32, 2*32, ... are not multiples of 3): the plan's padding must be
// the engine's.
TEST(Plan, PaddedShardsMatchTheEngineAtWorldThree) {
  auto plan = plan_memory(input(tiny(), ShardStrategy::FullShard, 3, at::kFloat, 1, 4));
  EXPECT_GT(plan.padded, plan.numel);
  run_ranks(3, [&](ProcessGroup& d, const WorldInfo& w) {
    ShardedModel sm(make_llama(tiny(), 3), d, w, {});
    int64_t master = 0, padded = 0;
    for (const auto& [name, t] : sm.shard_params()) master += bytes(t), padded += 3 * t.numel();
    EXPECT_EQ(master, plan.master);
    EXPECT_EQ(padded, plan.padded);
  });
}

// After forward + loss, what stays alive is the plan's saved activations (the tokens existed
// before): every layer's graph (selective's smaller one), or only its input with full recompute, the rope tables,
// and what the head's norm and fused loss keep (no logits). A shard group of one is resident, so
// full_shard at world 1 saves what shard_grad_op does.
struct ActCase {
  std::string strategy;
  Recompute recompute;
};
class SavedActivations : public ::testing::TestWithParam<ActCase> {};

TEST_P(SavedActivations, MatchWhatForwardLeavesAlive) {
  const auto [name, recompute] = GetParam();
  const auto strategy = parse_shard_strategy(name);
  const int64_t B = 2, T = 16;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto in = input(tiny(), strategy, 1, dtype, B, T);
    in.recompute = recompute;
    auto plan = plan_memory(in);
    EXPECT_EQ(plan.logits, (c10::elementSize(dtype) + 4) * B * T * 97);  // one chunk holds all 32 rows
    EXPECT_EQ(plan.layer_input, static_cast<int64_t>(c10::elementSize(dtype)) * B * T * 32);
    run_ranks(1, [&](ProcessGroup& d, const WorldInfo& w) {
      ShardOptions o;
      o.strategy = strategy, o.compute_dtype = dtype;
      auto model = make_llama(tiny(), 3);
      model->recompute = recompute;
      ShardedModel sm(model, d, w, o);
      auto b = batch(B, T);
      // The model's rope table is built once on first use and kept (model/rope.h): warm it first,
      // so the count is what every later step leaves alive.
      (void)model->rope().tables(b.positions, dtype);
      int64_t held = 0;
      {
        CountingScope counter;
        auto loss = sm.loss_sum(b.tokens, b.positions, {}, b.targets);
        held = counter.live();
        loss.backward();
      }
      // Slack: a few scalars (the loss, nll's total weight).
      EXPECT_NEAR(static_cast<double>(held), static_cast<double>(plan.activations_saved - plan.tokens), 64.0)
          << c10::toString(dtype);
    });
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, SavedActivations,
                         ::testing::Values(ActCase{"full_shard", Recompute::None}, ActCase{"full_shard", Recompute::Full},
                                           ActCase{"full_shard", Recompute::Selective},
                                           ActCase{"shard_grad_op", Recompute::None},
                                           ActCase{"shard_grad_op", Recompute::Full},
                                           ActCase{"shard_grad_op", Recompute::Selective}),
                         [](const auto& info) { return info.param.strategy + "_" + enum_name(info.param.recompute); });

// One bf16 decoder layer, plain and selective: what its graph keeps, measured, against the
// per-token formula (MHA and GQA: CPU SDPA, like the fused CUDA kernels, takes GQA without
// expanding k and v).
// Qwen2's biases keep nothing more; Qwen3's per-head q/k norms keep what a norm keeps.
TEST(Plan, LayerActivationFormulaMatchesWhatAutogradKeeps) {
  const int64_t B = 2, T = 32;
  for (ModelFamily family : {ModelFamily::Llama, ModelFamily::Qwen2, ModelFamily::Qwen3})
  for (int64_t kv : {4, 2})
  for (bool selective : {false, true}) {
    auto c = tiny(kv);
    c.model_type = family;
    if (family == ModelFamily::Qwen3) c.head_dim = 16;
    auto model = make_llama(c, 5);
    model->to(at::kBFloat16);
    auto rope = model->rope().tables(default_positions(B, T, 0, at::kCPU), at::kBFloat16);
    auto x = at::randn({B, T, c.hidden_size}).to(at::kBFloat16).requires_grad_(true);
    int64_t held = 0;
    {
      CountingScope counter;
      auto out = model->model->layers[0]->forward(x, rope, AttentionSpec{}, nullptr, selective);
      // Selective keeps the layer's own input for its first norm, allocated before the count began.
      held = counter.live() - bytes(out) + (selective ? bytes(x) : 0);
      out.sum().backward();
    }
    const int64_t expected =
        B * T * layer_activation_bytes_per_token(c, at::kBFloat16, selective ? Recompute::Selective : Recompute::None);
    EXPECT_NEAR(static_cast<double>(held), static_cast<double>(expected), 64.0)
        << enum_name(family) << " kv heads " << kv << " selective " << selective;
  }
}

TEST(Plan, Llama2At70BFitsFullyShardedButNotReplicated) {
  const auto c70 = llama2(8192, 28672, 80, 64, 8);
  // As configs/*/…70b.yaml train it: layers recomputed in backward. Keeping every layer's graph
  // at seq 4096 would need ~130 GB of activations alone.
  auto full_in = input(c70, ShardStrategy::FullShard, 512, at::kBFloat16, 1, 4096);
  full_in.recompute = Recompute::Full;
  auto full = plan_memory(full_in);
  EXPECT_LT(full.total(), int64_t{80} << 30);
  full_in.recompute = Recompute::None;
  EXPECT_GT(plan_memory(full_in).total(), int64_t{80} << 30);
  auto ddp = input(c70, ShardStrategy::NoShard, 8, at::kBFloat16, 1, 4096);
  ddp.gpus_per_node = 8;
  EXPECT_GT(plan_memory(ddp).total(), int64_t{80} << 30);
  // Replicated: 4 (master) + 2 (bf16 copy) + 4 (fp32 grads) + 8 (moments) bytes per parameter at least.
  EXPECT_GT(plan_memory(ddp).total(), 18 * full.numel);
}

TEST(Plan, FullShardMemoryFallsWithMoreGpus) {
  for (const auto& c : {llama2(4096, 11008, 32, 32, 32), llama2(8192, 28672, 80, 64, 8)}) {
    int64_t last = std::numeric_limits<int64_t>::max();
    for (int world : {8, 32, 128, 512}) {
      auto in = input(c, ShardStrategy::FullShard, world, at::kBFloat16, 1, 4096);
      in.gpus_per_node = 8;
      auto p = plan_memory(in);
      EXPECT_LT(p.total(), last) << world;
      last = p.total();
    }
  }
}

// V=10, D=4, F=6, L=1, H=2, KV=1, head_dim 2: groups embed 40, layer matrices 4*2*(4+2)+3*4*6 =
// 120, layer norms 8, head 40 + 4: 212 elements.
TEST(Plan, CommunicationVolumesByHand) {
  LlamaConfig c = llama2(4, 6, 1, 2, 1);
  c.vocab_size = 10;
  auto run = [&](ShardStrategy s, int world, int per_node, int64_t accum) {
    auto in = input(c, s, world, at::kBFloat16, 1, 4);
    in.gpus_per_node = per_node, in.grad_accum = accum;
    return plan_memory(in);
  };
  // World 3 pads to 42 + 120 + 9 + 42 + 6 = 219. Two micro-batches of (bf16 gather, bf16
  // re-gather, fp32 reduce-scatter) at 2/3 of the buffer: 2 * 8 * 219 * 2/3 = 2336.
  auto fs = run(ShardStrategy::FullShard, 3, 8, 2);
  EXPECT_EQ(fs.padded, 219);
  EXPECT_DOUBLE_EQ(fs.intra_bytes, 2336.0);
  EXPECT_DOUBLE_EQ(fs.inter_bytes, 0.0);
  // Spanning nodes (3 GPUs per node, world 6 -> padded 42+120+12+42+6 = 222): all on the network.
  auto fs6 = run(ShardStrategy::FullShard, 6, 3, 1);
  EXPECT_DOUBLE_EQ(fs6.inter_bytes, 8.0 * 222 * 5 / 6);
  EXPECT_DOUBLE_EQ(fs6.intra_bytes, 0.0);
  // Hybrid, 2 nodes of 3: the same intra-node traffic, plus the fp32 shard (219/3 = 73 elements)
  // all-reduced between 2 replicas: 2 * 4 * 73 * 1/2 = 292.
  auto hs = run(ShardStrategy::HybridShard, 6, 3, 2);
  EXPECT_DOUBLE_EQ(hs.intra_bytes, 2336.0);
  EXPECT_DOUBLE_EQ(hs.inter_bytes, 292.0);
  // no_shard, 4 GPUs in a node: all-reduce of the 212 fp32 grads once a step = 2 * 848 * 3/4.
  EXPECT_DOUBLE_EQ(run(ShardStrategy::NoShard, 4, 8, 5).intra_bytes, 1272.0);
  // shard_grad_op: fp32 reduce-scatter + bf16 gather after the step, (4 + 2) * 212 * 3/4.
  EXPECT_DOUBLE_EQ(run(ShardStrategy::ShardGradOp, 4, 8, 5).intra_bytes, 954.0);
  // A world of one talks to nobody.
  EXPECT_DOUBLE_EQ(run(ShardStrategy::FullShard, 1, 8, 4).intra_bytes, 0.0);
}

TEST(Plan, StepBoundIsTheSlowerOfComputeAndCommunication) {
  auto in = input(llama2(4096, 11008, 32, 32, 32), ShardStrategy::FullShard, 64, at::kBFloat16, 1, 4096);
  in.gpus_per_node = 8;
  Hardware hw;
  auto p = plan_memory(in, hw);
  // 7B at 4096: N = 32 layers * 202,375,168 + the 131,072,000 head = 6,607,077,376 matmul weights.
  const double per_token = 6.0 * 6607077376.0 + 12.0 * 32 * 4096 * 4096;
  EXPECT_NEAR(p.compute_s, per_token * 4096 / 989e12, 1e-9);
  EXPECT_NEAR(p.comm_s, p.inter_bytes / 50e9, 1e-12);
  EXPECT_DOUBLE_EQ(p.step_bound_s(), std::max(p.compute_s, p.comm_s));
  EXPECT_GT(p.comm_s, p.compute_s);  // a 7B unit per 4k tokens is network-bound at 50 GB/s
}

// A tied table is one parameter: held once (masters, grads, moments), while per unit it is
// gathered for the embedding and again for the head, as an untied model's two matrices are.
TEST(Plan, TiedTableIsHeldOnceAndGatheredTwice) {
  auto tied = tiny();
  tied.tie_word_embeddings = true;
  const int64_t table = tied.vocab_size * tied.hidden_size;
  for (int world : {1, 2}) {
    const auto a = plan_memory(input(tiny(), ShardStrategy::FullShard, world, at::kBFloat16, 1, 4));
    const auto b = plan_memory(input(tied, ShardStrategy::FullShard, world, at::kBFloat16, 1, 4));
    EXPECT_EQ(a.numel - b.numel, table);
    EXPECT_EQ(a.master - b.master, 4 * table / world);
    // Resident (world 1) the one bf16 table serves both; per unit the head's gather holds it again.
    EXPECT_EQ(a.gathered - b.gathered, world == 1 ? 2 * table : 0) << world;
    EXPECT_EQ(a.intra_bytes, b.intra_bytes) << world;
  }
}

TEST(Plan, RejectsWhatTheEngineRejects) {
  auto in = input(tiny(), ShardStrategy::HybridShard, 12, at::kFloat, 1, 4);
  in.gpus_per_node = 8;
  EXPECT_THROW(plan_memory(in), std::exception);
}

}  // namespace
