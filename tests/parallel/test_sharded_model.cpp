// The sharded engine against the plain model (the single-process oracle): for every strategy and
// world size, the reassembled gradient of a global batch equals plain autograd's, and 20 AdamW
// steps on 2 ranks give the same losses and weights as on 1 rank (within 1e-5 relative, fp32).
// The same with LoRA adapters on a frozen base (the engine's frozen groups), where only the
// adapters train and the base stays bit-identical. The same for tied embeddings (one table used by
// the embedding and the head: its gradient is the sum of both uses). Ranks are threads over a
// shared HashStore, each with its own Gloo group.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "thread_ranks.h"
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <functional>
#include <mutex>
#include <thread>

#include "agenttune/parallel/base_fingerprint.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/model/lora.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/optimizer.h"
#include "tiny_llama.h"

using namespace agenttune;
using namespace agenttune::parallel;

namespace {

LlamaConfig tiny(ModelFamily family = ModelFamily::Llama, bool tied = false) {
  auto c = agenttune::testing::tiny_llama(97);
  c.model_type = family;  // qwen2: q/k/v biases; qwen3: q/k norms over an explicit head_dim
  if (family == ModelFamily::Qwen3) c.head_dim = 16;
  c.tie_word_embeddings = tied;
  return c;
}

struct Batch {
  at::Tensor tokens, targets, positions;
};

// Two fixed batches in turn: learnable (memorisable), so the loss visibly falls in 20 steps.
Batch global_batch(int64_t step) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(1000 + step % 2);
  auto tokens = at::randint(3, 97, {4, 16}, g, at::kLong);
  auto targets = labels_to_targets(tokens);
  targets.index_put_({0, at::indexing::Slice(0, 5)}, -100);  // some untrained positions
  return {tokens, targets, at::arange(16, at::kLong).expand({4, 16}).contiguous()};
}

// Rows of the global batch that rank r of w takes (as the mixture deals windows).
Batch rows_for(const Batch& b, int r, int w) {
  auto idx = at::arange(r, 4, w, at::kLong);
  return {b.tokens.index_select(0, idx), b.targets.index_select(0, idx), b.positions.index_select(0, idx)};
}

using agenttune::testing::run_ranks;

// Relative difference in norm: ||a - b|| / ||b||. Rank counts change the order of fp32 sums, and
// AdamW's normalised update magnifies that noise on single elements with near-zero gradients, so
// an element-wise maximum would measure rounding luck, not agreement.
double rel_norm_diff(const at::Tensor& a, const at::Tensor& b) {
  auto d = a.to(at::kDouble) - b.to(at::kDouble);
  return (d.norm() / (b.to(at::kDouble).norm() + 1e-12)).item<double>();
}

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() / (b.to(at::kDouble).abs().max() + 1e-12)).item<double>();
}

struct Case {
  std::string strategy;
  int world;
  int hybrid_group = 0;
  bool lora = false;
  double dropout = 0;
  SingleRankPath single_rank_path = SingleRankPath::Resident;
  Offload offload = Offload::None;
  bool qlora = false;  // with lora: the projections held as NF4 records
  ModelFamily family = ModelFamily::Llama;
  bool tied = false;  // tie_word_embeddings: the head computes with the embedding's table
};

std::string case_name(const Case& c) {
  return c.strategy + "_w" + std::to_string(c.world) + (c.hybrid_group ? "_g" + std::to_string(c.hybrid_group) : "") +
         (c.single_rank_path == SingleRankPath::PerUnit ? "_per_unit" : "") +
         (c.offload == Offload::Optimizer ? "_offload" : "") + (c.qlora ? "_qlora" : c.lora ? "_lora" : "") +
         (c.family != ModelFamily::Llama ? "_" + enum_name(c.family) : "") + (c.tied ? "_tied" : "");
}

ShardOptions options(const Case& c) {
  ShardOptions o;
  o.strategy = parse_shard_strategy(c.strategy);
  o.hybrid_group_size = c.hybrid_group;
  o.single_rank_path = c.single_rank_path;
  o.offload = c.offload;
  return o;
}

// The test model: with `lora`, rank-4 adapters on every projection over the frozen base, B drawn
// non-zero (PEFT starts it at zero) so that every adapter parameter has a gradient from step 0;
// with `qlora` too, the projections then quantised to NF4 (the plain-autograd oracle computes on
// the same records).
LlamaForCausalLM model_for(const Case& c) {
  auto m = make_llama(tiny(c.family, c.tied), 7);
  if (c.family != ModelFamily::Llama) {
    // Biases away from their zero start, so a bias the engine dropped changes the output.
    at::NoGradGuard ng;
    auto g = at::make_generator<at::CPUGeneratorImpl>(5);
    for (auto& p : m->named_parameters())
      if (p.key().find(".bias") != std::string::npos) p.value().uniform_(-0.3, 0.3, g);
  }
  if (!c.lora) return m;
  AdapterConfig a;
  a.kind = c.qlora ? AdapterKind::Qlora : AdapterKind::Lora, a.rank = 4, a.alpha = 8, a.dropout = c.dropout, a.init_seed = 3;
  add_adapters(m, a);
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  at::NoGradGuard ng;
  for (auto& p : m->named_parameters())
    if (p.key().size() > 7 && p.key().substr(p.key().size() - 7) == ".lora_B") p.value().normal_(0, 0.05, g);
  if (c.qlora) quantize_projections(m, /*quantise_values=*/true);
  return m;
}

class Sharded : public ::testing::TestWithParam<Case> {};

TEST_P(Sharded, GradientsEqualPlainAutograd) {
  const Case c = GetParam();
  const std::string& strategy = c.strategy;
  auto batch = global_batch(0);
  // Oracle: the plain model, whole batch, loss normalised by the batch's trained tokens.
  auto ref = model_for(GetParam());
  double denom = static_cast<double>(count_trained(batch.targets));
  (cross_entropy_sum(ref->forward(batch.tokens, batch.positions), batch.targets) / denom).backward();
  std::map<std::string, at::Tensor> ref_grads;
  for (auto& p : ref->named_parameters()) ref_grads[p.key()] = p.value().grad();

  std::mutex mu;
  run_ranks(c.world, [&](ProcessGroup& d, const WorldInfo& w) {
    ShardedModel sm(model_for(c), d, w, options(c));
    auto mine = rows_for(batch, d.rank(), d.world_size());
    // The training path: the fused chunked loss, against the plain model's logits + cross-entropy.
    (sm.loss_sum(mine.tokens, mine.positions, {}, mine.targets) / denom).backward();
    sm.finish_backward();
    // The plain grads flattened as the layout a checkpoint records, resharded to this rank.
    const auto layout = sm.layout();
    auto want = sm.own_slices([&](const std::string& group, int64_t) {
      std::vector<at::Tensor> parts;
      for (const auto& g : layout["groups"])
        if (g["name"] == group)
          for (const auto& p : g["params"]) parts.push_back(ref_grads.at(p["name"].get<std::string>()).reshape({-1}));
      return at::cat(parts);
    });
    auto shards = sm.shard_params();
    ASSERT_EQ(shards.size(), want.size());
    for (size_t gi = 0; gi < shards.size(); ++gi) {
      const auto& [name, shard] = shards[gi];
      std::lock_guard<std::mutex> lock(mu);
      ASSERT_TRUE(shard.grad().defined()) << name;
      EXPECT_LE(rel_diff(shard.grad(), want[gi].second), 1e-5) << strategy << " rank " << d.rank() << " " << name;
    }
  });
}

// The full weights from every rank's shards, reassembled as a checkpoint is: the first shard
// group's slices (ranks 0 .. shard_world - 1) end to end, cut by the recorded layout.
std::map<std::string, at::Tensor> full_weights(const nlohmann::json& layout, const std::map<int, NamedTensors>& shards) {
  std::map<std::string, at::Tensor> out;
  const auto& groups = layout["groups"];
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    std::vector<at::Tensor> slices;
    for (int r = 0; r < layout["shard_world"].get<int>(); ++r) slices.push_back(shards.at(r)[gi].second);
    auto full = at::cat(slices);
    for (const auto& p : groups[gi]["params"]) {
      auto shape = p["shape"].get<std::vector<int64_t>>();
      const int64_t numel = c10::multiply_integers(shape);
      out[p["name"].get<std::string>()] = full.narrow(0, p["offset"].get<int64_t>(), numel).view(shape);
    }
  }
  return out;
}

// One AdamW step with clipping on this rank's rows of global batch `step`; returns the step's loss.
double adamw_step(ShardedModel& sm, AdamW& opt, ProcessGroup& d, int step) {
  auto batch = global_batch(step);
  auto mine = rows_for(batch, d.rank(), d.world_size());
  double denom = static_cast<double>(count_trained(batch.targets));
  auto sum = cross_entropy_sum(sm.logits(mine.tokens, mine.positions, {}), mine.targets);
  (sum / denom).backward();
  sm.finish_backward();
  double loss = d.all_reduce(sum.item<double>(), Reduce::Sum, "loss") / denom;
  sm.clip_grad_norm(1.0);
  sm.before_optimizer_step();  // applies the clip to offloaded host grads
  opt.step(3e-3);
  opt.zero_grad();
  sm.after_optimizer_step();
  return loss;
}

// 20 AdamW steps; returns the losses and the final full weights.
void train_steps(const Case& c, std::vector<double>& losses, std::map<std::string, at::Tensor>& weights) {
  std::mutex mu;
  std::map<int, NamedTensors> shards;
  nlohmann::json layout;
  run_ranks(c.world, [&](ProcessGroup& d, const WorldInfo& w) {
    ShardedModel sm(model_for(c), d, w, options(c));
    AdamW opt(sm.shard_params(), {}, sm.shard_decay());
    for (int step = 0; step < 20; ++step) {
      double loss = adamw_step(sm, opt, d, step);
      if (d.is_main()) losses.push_back(loss);
    }
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& [name, t] : sm.shard_params()) shards[d.rank()].emplace_back(name, t.detach().cpu().clone());
    if (d.is_main()) layout = sm.layout();
  });
  weights = full_weights(layout, shards);
}

TEST_P(Sharded, TwentyStepsMatchASingleRank) {
  Case c = GetParam();
  std::vector<double> one_losses, losses;
  std::map<std::string, at::Tensor> one_w, w;
  Case one{"no_shard", 1, 0, c.lora};
  one.qlora = c.qlora;
  one.family = c.family;
  one.tied = c.tied;
  train_steps(one, one_losses, one_w);
  train_steps(c, losses, w);
  ASSERT_EQ(losses.size(), 20u);
  EXPECT_LT(losses.back(), losses.front() - 0.1) << "the loss did not fall";
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_NEAR(losses[i], one_losses[i], 1e-5 * std::abs(one_losses[i])) << i;
  ASSERT_EQ(w.size(), one_w.size());
  for (auto& [n, t] : one_w) EXPECT_LE(rel_norm_diff(w.at(n), t), 1e-5) << n;
}

INSTANTIATE_TEST_SUITE_P(Strategies, Sharded,
                         ::testing::Values(Case{"full_shard", 1}, Case{"full_shard", 2}, Case{"shard_grad_op", 2},
                                           Case{"no_shard", 2}, Case{"hybrid_shard", 2, 1}, Case{"hybrid_shard", 4, 2},
                                           Case{"full_shard", 1, 0, true},
                                           Case{"full_shard", 1, 0, true, 0, SingleRankPath::PerUnit},
                                           Case{"full_shard", 2, 0, true}, Case{"shard_grad_op", 2, 0, true},
                                           Case{"no_shard", 2, 0, true}, Case{"hybrid_shard", 4, 2, true},
                                           Case{"full_shard", 2, 0, true, 0, SingleRankPath::Resident, Offload::Optimizer},
                                           Case{"full_shard", 2, 0, true, 0, {}, {}, true},
                                           Case{"shard_grad_op", 2, 0, true, 0, {}, {}, true},
                                           Case{"no_shard", 2, 0, true, 0, {}, {}, true},
                                           // Qwen-shaped: biases and q/k norms are ordinary (no-decay) parameters.
                                           Case{"full_shard", 2, 0, false, 0, {}, {}, false, ModelFamily::Qwen2},
                                           Case{"full_shard", 2, 0, false, 0, {}, {}, false, ModelFamily::Qwen3},
                                           Case{"full_shard", 2, 0, true, 0, {}, {}, false, ModelFamily::Qwen2},
                                           Case{"full_shard", 2, 0, true, 0, {}, {}, true, ModelFamily::Qwen3},
                                           // Tied: the embedding's groups are the head's too.
                                           Case{"full_shard", 1, 0, false, 0, {}, {}, false, {}, true},
                                           Case{"full_shard", 1, 0, false, 0, SingleRankPath::PerUnit, {}, false, {}, true},
                                           Case{"full_shard", 2, 0, false, 0, {}, {}, false, {}, true},
                                           Case{"shard_grad_op", 2, 0, false, 0, {}, {}, false, {}, true},
                                           Case{"no_shard", 2, 0, false, 0, {}, {}, false, {}, true},
                                           Case{"hybrid_shard", 4, 2, false, 0, {}, {}, false, {}, true},
                                           Case{"full_shard", 2, 0, false, 0, {}, Offload::Optimizer, false, {}, true},
                                           Case{"full_shard", 2, 0, false, 0, {}, {}, false, ModelFamily::Qwen2, true},
                                           Case{"full_shard", 2, 0, true, 0, {}, {}, false, {}, true},
                                           Case{"full_shard", 2, 0, true, 0, {}, {}, true, {}, true}),
                         [](const auto& info) { return case_name(info.param); });


// Prefetch on and off: the same collectives in the same order, so every loss, shard grad and
// weight is bit-identical (not merely close) over steps of two micro-batches each, which makes
// the per-unit strategies accumulate reduce-scattered grads across micro-batches.
struct Run {
  std::vector<double> losses;                   // rank 0's, per step
  std::map<std::string, at::Tensor> per_rank;   // "r<rank>/<group>/{grad,weight}"
  ShardStats stats;                             // rank 0's
};

struct Variant {
  bool prefetch = true;
  bool reshard_after_forward = true;
  Recompute recompute = Recompute::None;
};

Run run_variant(const Case& c, const Variant& v, c10::ScalarType dtype, int steps) {
  Run out;
  std::mutex mu;
  run_ranks(c.world, [&](ProcessGroup& d, const WorldInfo& w) {
    ShardOptions o = options(c);
    o.compute_dtype = dtype;
    o.prefetch = v.prefetch;
    o.reshard_after_forward = v.reshard_after_forward;
    auto model = model_for(c);
    model->recompute = v.recompute;
    ShardedModel sm(model, d, w, o);
    AdamW opt(sm.shard_params(), {}, sm.shard_decay());
    for (int step = 0; step < steps; ++step) {
      sm.seed_dropout(100 + step);  // as the trainer does (nothing without adapter dropout)
      double denom = 0, sum = 0;
      std::vector<Batch> micro;
      for (int m = 0; m < 2; ++m) {
        auto batch = global_batch(2 * step + m);
        denom += static_cast<double>(count_trained(batch.targets));
        micro.push_back(rows_for(batch, d.rank(), d.world_size()));
      }
      for (auto& mb : micro) {
        auto loss = sm.loss_sum(mb.tokens, mb.positions, {}, mb.targets);
        (loss / denom).backward();
        sum += loss.item<double>();
      }
      sm.finish_backward();
      double loss = d.all_reduce(sum, Reduce::Sum, "loss") / denom;
      sm.clip_grad_norm(1.0);
      {
        std::lock_guard<std::mutex> lock(mu);  // not held across collectives: the peers would wait on it
        for (const auto& [name, t] : sm.shard_params())
          out.per_rank["r" + std::to_string(d.rank()) + "/" + name + "/grad/" + std::to_string(step)] = t.grad().clone();
        if (d.is_main()) out.losses.push_back(loss);
      }
      opt.step(3e-3);
      opt.zero_grad();
      sm.after_optimizer_step();
    }
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& [name, t] : sm.shard_params())
      out.per_rank["r" + std::to_string(d.rank()) + "/" + name + "/weight"] = t.detach().clone();
    if (d.is_main()) out.stats = sm.stats();
  });
  return out;
}

class Prefetch : public ::testing::TestWithParam<Case> {};

TEST_P(Prefetch, OnAndOffAreBitIdentical) {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto off = run_variant(GetParam(), {.prefetch = false}, dtype, 3);
    auto on = run_variant(GetParam(), {}, dtype, 3);
    ASSERT_EQ(on.losses.size(), 3u);
    for (size_t i = 0; i < on.losses.size(); ++i) EXPECT_EQ(on.losses[i], off.losses[i]) << i;
    ASSERT_EQ(on.per_rank.size(), off.per_rank.size());
    for (auto& [name, t] : off.per_rank) {
      ASSERT_TRUE(on.per_rank.count(name)) << name;
      EXPECT_TRUE(at::equal(on.per_rank.at(name), t)) << name << " " << c10::toString(dtype);
    }
    EXPECT_EQ(off.stats.prefetches, 0);
  }
}

// A unit's backward either walks the graph its forward kept (parameters freed in between and
// gathered again into the same storage, or kept gathered) or recomputes the unit (activation
// checkpointing, whole or selective): the same kernels on the same inputs, so the same bits.
TEST_P(Prefetch, ReshardKeepAndRecomputeAreBitIdentical) {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto base = run_variant(GetParam(), {}, dtype, 2);
    for (const Variant& v : {Variant{.reshard_after_forward = false}, Variant{.recompute = Recompute::Full},
                             Variant{.recompute = Recompute::Selective},
                             Variant{.reshard_after_forward = false, .recompute = Recompute::Selective},
                             Variant{.prefetch = false, .reshard_after_forward = false}}) {
      auto other = run_variant(GetParam(), v, dtype, 2);
      ASSERT_EQ(other.per_rank.size(), base.per_rank.size());
      for (auto& [name, t] : base.per_rank)
        EXPECT_TRUE(at::equal(other.per_rank.at(name), t))
            << name << " " << c10::toString(dtype) << " reshard " << v.reshard_after_forward << " recompute "
            << enum_name(v.recompute);
    }
  }
}

// Adapter dropout at world 1 (one thread: ranks as threads would share the CPU generator): a
// recomputed unit draws the masks its forward drew.
INSTANTIATE_TEST_SUITE_P(Strategies, Prefetch,
                         ::testing::Values(Case{"full_shard", 2}, Case{"shard_grad_op", 2}, Case{"no_shard", 2},
                                           Case{"hybrid_shard", 4, 2}, Case{"full_shard", 2, 0, true},
                                           Case{"shard_grad_op", 2, 0, true},
                                           Case{"full_shard", 1, 0, true, 0.3, SingleRankPath::PerUnit},
                                           Case{"full_shard", 2, 0, true, 0, {}, {}, true},
                                           Case{"full_shard", 2, 0, false, 0, {}, {}, false, {}, true},
                                           Case{"shard_grad_op", 2, 0, false, 0, {}, {}, false, {}, true},
                                           Case{"full_shard", 2, 0, true, 0, {}, {}, false, {}, true}),
                         [](const auto& info) {
                           return case_name(info.param) + (info.param.dropout > 0 ? "_dropout" : "");
                         });

// full_shard with 2 layers has 4 units (embed, 2 layers, head). Each micro-batch prefetches units
// 1..3 in forward and 2..1 in backward (the head stays gathered from its forward to its backward,
// the embedding's backward needs no weight); at most the current and the prefetched unit are
// gathered, so the peak is the largest pair of neighbouring units, in bytes as well.
TEST(Prefetch, AtMostTwoUnitsGatheredAtOnce) {
  const auto c = tiny();
  const int64_t D = c.hidden_size, hd = D / c.num_attention_heads;
  const int64_t layer = D * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads) +
                        3 * D * c.intermediate_size + 2 * D;  // divisible by 2: no padding
  const int64_t embed = c.vocab_size * D, head = c.vocab_size * D + D;
  for (bool prefetch : {false, true}) {
    auto r = run_variant({"full_shard", 2}, {.prefetch = prefetch}, at::kFloat, 2);
    EXPECT_EQ(r.stats.peak_resident_units, prefetch ? 2 : 1);
    EXPECT_EQ(r.stats.prefetches, prefetch ? 2 * 2 * 5 : 0);  // 2 steps x 2 micro-batches x 5
    const int64_t peak = prefetch ? std::max({embed + layer, 2 * layer, layer + head}) : std::max(layer, head);
    EXPECT_EQ(r.stats.peak_gathered_bytes, 4 * peak);
  }
}

// Tied: the head gathers the embedding's table again rather than keeping it from the first unit,
// so at most a layer and the head with the table are gathered at once (never the table beside two
// layers), and the table is one group, trained once: its grad is the sum of both uses (checked
// against plain autograd by Sharded.GradientsEqualPlainAutograd/*_tied).
TEST(Prefetch, TiedTableIsGatheredAgainForTheHead) {
  const auto c = tiny(ModelFamily::Llama, true);
  const int64_t D = c.hidden_size, hd = D / c.num_attention_heads;
  const int64_t layer = D * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads) +
                        3 * D * c.intermediate_size + 2 * D;
  const int64_t table = c.vocab_size * D;  // 97 x 32: even, no padding
  Case tied{"full_shard", 2};
  tied.tied = true;
  for (bool reshard : {true, false}) {
    auto r = run_variant(tied, {.reshard_after_forward = reshard}, at::kFloat, 1);
    // Kept from forward to backward, every unit is gathered at the end of forward (the table once).
    const int64_t peak = reshard ? std::max({table + layer, 2 * layer, layer + D + table}) : table + 2 * layer + D;
    EXPECT_EQ(r.stats.peak_gathered_bytes, 4 * peak) << "reshard " << reshard;
  }
  run_ranks(2, [&](ProcessGroup& d, const WorldInfo& w) {
    ShardedModel sm(model_for(tied), d, w, options(tied));
    std::vector<std::string> names;
    for (const auto& [name, t] : sm.shard_params()) names.push_back(name);
    EXPECT_EQ(names, (std::vector<std::string>{"embed.decay", "layers.0.decay", "layers.0.no_decay", "layers.1.decay",
                                               "layers.1.no_decay", "head.no_decay"}));
    EXPECT_EQ(sm.layout().dump().find("lm_head"), std::string::npos);
  });
}

// A peer that dies while this rank's prefetched all-gather is in flight: the wait reports the
// prefetched collective by name, in forward and in backward (through the autograd engine).
TEST(Prefetch, PeerDyingDuringAPrefetchGivesTheNamedError) {
  for (bool in_backward : {false, true}) {
    std::string error;
    int64_t prefetches = 0;
    run_ranks(
        2,
        [&](ProcessGroup& d, const WorldInfo& w) {
          // Backward: the head stays gathered from forward and the layers are recomputed, so the
          // first collective of backward is the prefetch of the last layer.
          ShardOptions o{.reshard_after_forward = !in_backward};
          // Rank 1 takes part in what rank 0 waits for first, then leaves (its group shuts down):
          // the whole forward, or the embedding's gather alone (without prefetch), out-of-range
          // token ids then failing its lookup.
          if (d.rank() == 1 && !in_backward) o.prefetch = false;
          auto model = make_llama(tiny(), 7);
          model->recompute = in_backward ? Recompute::Full : Recompute::None;
          ShardedModel sm(model, d, w, o);
          auto b = rows_for(global_batch(0), d.rank(), 2);
          if (d.rank() == 1) {
            try {
              sm.logits(in_backward ? b.tokens : b.tokens + tiny().vocab_size, b.positions, {});
            } catch (const std::exception&) {
            }
            return;
          }
          try {
            auto logits = sm.logits(b.tokens, b.positions, {});
            if (in_backward) cross_entropy_sum(logits, b.targets).backward();
          } catch (const std::exception& e) {
            error = e.what();
          }
          prefetches = sm.stats().prefetches;
        },
        std::chrono::seconds(5));
    // Forward dies waiting for unit 1 (layers.0), prefetched during the embedding; backward for
    // unit 2 (layers.1), prefetched during the head's backward (forward's three prefetches before).
    const std::string want = in_backward ? "all_gather_into_tensor of 'layers.1.decay' on rank 0 of 2"
                                         : "all_gather_into_tensor of 'layers.0.decay' on rank 0 of 2";
    EXPECT_NE(error.find(want), std::string::npos) << error;
    EXPECT_EQ(prefetches, in_backward ? 4 : 1);
  }
}

// LoRA: the trainable groups are the layers' adapters alone (embedding, norms and head are frozen);
// after AdamW steps the frozen shards are bit-identical while every adapter group moved; the base
// fingerprint is the whole model's at every world size and strategy, and another base's differs.
// QLoRA the same, with each layer's NF4 records in a frozen group of bytes of its own.
TEST(LoraSharded, OnlyAdaptersTrainAndTheBaseStaysBitIdentical) {
  EXPECT_EQ(base_fingerprint(*make_llama(tiny(), 7)), "") << "nothing is frozen";
  auto other = make_llama(tiny(), 8);
  add_adapters(other, AdapterConfig{.kind = AdapterKind::Lora});
  for (bool qlora : {false, true}) {
    Case whole{"no_shard", 1, 0, true};
    whole.qlora = qlora;
    const std::string want = base_fingerprint(*model_for(whole));
    ASSERT_EQ(want.size(), 16u);
    EXPECT_NE(base_fingerprint(*other), want);
    for (Case c : {Case{"full_shard", 2, 0, true}, Case{"shard_grad_op", 2, 0, true}, Case{"hybrid_shard", 4, 2, true},
                   Case{"no_shard", 1, 0, true}}) {
      c.qlora = qlora;
      std::mutex mu;
      run_ranks(c.world, [&](ProcessGroup& d, const WorldInfo& w) {
        ShardedModel sm(model_for(c), d, w, options(c));
        EXPECT_EQ(sm.base_fingerprint(), want) << case_name(c);
        std::vector<std::string> trained, frozen_names;
        NamedTensors frozen, adapters;
        for (const auto& [name, t] : sm.shard_params()) trained.push_back(name), adapters.emplace_back(name, t.detach().clone());
        for (const auto& [name, t] : sm.frozen_shards()) frozen_names.push_back(name), frozen.emplace_back(name, t.clone());
        AdamW opt(sm.shard_params(), {}, sm.shard_decay());
        for (int step = 0; step < 3; ++step) adamw_step(sm, opt, d, step);
        std::lock_guard<std::mutex> lock(mu);
        EXPECT_EQ(trained, (std::vector<std::string>{"layers.0.decay", "layers.1.decay"})) << case_name(c);
        const std::vector<std::string> want_frozen =
            qlora ? std::vector<std::string>{"embed.frozen", "layers.0.frozen", "layers.0.frozen_bytes", "layers.1.frozen",
                                             "layers.1.frozen_bytes", "head.frozen"}
                  : std::vector<std::string>{"embed.frozen", "layers.0.frozen", "layers.1.frozen", "head.frozen"};
        EXPECT_EQ(frozen_names, want_frozen) << case_name(c);
        auto after = sm.frozen_shards();
        ASSERT_EQ(after.size(), frozen.size());
        for (size_t i = 0; i < frozen.size(); ++i) EXPECT_TRUE(at::equal(after[i].second, frozen[i].second)) << frozen[i].first;
        auto moved = sm.shard_params();
        for (size_t i = 0; i < adapters.size(); ++i)
          EXPECT_FALSE(at::equal(moved[i].second, adapters[i].second)) << adapters[i].first << " did not train";
      });
    }
  }
}

}  // namespace
