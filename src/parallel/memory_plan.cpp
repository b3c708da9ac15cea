#include "agenttune/parallel/memory_plan.h"

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "agenttune/model/flops.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/shard_layout.h"
#include "agenttune/util/error.h"

namespace agenttune::parallel {

namespace {

// Element counts of ShardedModel's flat groups, unit by unit, in its build order.
// ShardedModel's flat groups (element counts), unit by unit in build order, as runs of equal
// units: the embedding, the decoder layers (one unit repeated num_hidden_layers times), the norm +
// head. Runs keep a damaged config's billion layers from being walked one by one.
struct UnitRun {
  std::vector<int64_t> groups;
  int64_t repeat = 1;
};

std::vector<UnitRun> unit_runs(const LlamaConfig& c) {
  const int64_t D = c.hidden_size, hd = c.resolved_head_dim();
  const int64_t matrices = D * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads) +
                           3 * D * c.intermediate_size;
  return {{{c.vocab_size * D}, 1}, {{matrices, 2 * D}, c.num_hidden_layers}, {{c.vocab_size * D, D}, 1}};
}

// What the caching host allocator gives for a pinned block of `bytes`: the next power of two.
int64_t pinned_block(int64_t bytes) {
  int64_t block = 1;
  while (block < bytes) block *= 2;
  return bytes > 0 ? block : 0;
}

// The ring cost per GPU of one collective over n ranks on a buffer of `bytes`.
double gather_or_scatter(double bytes, int n) { return n > 1 ? bytes * (n - 1) / n : 0.0; }

}  // namespace

int64_t layer_activation_bytes_per_token(const LlamaConfig& c, c10::ScalarType compute_dtype, Recompute mode) {
  const int64_t s = c10::elementSize(compute_dtype);
  const int64_t D = c.hidden_size, hd = c.resolved_head_dim();
  const int64_t dq = c.num_attention_heads * hd, dkv = c.num_key_value_heads * hd;
  // Each RMSNorm keeps its fp32 input (the upcast copy, or the input itself in fp32) for pow's
  // backward, the fp32 rsqrt per token, the normalised input in the compute dtype for the weight's
  // grad, and its output (for the q/k/v or gate/up linears' grads). RoPE multiplies by constant tables, so autograd keeps only q and k
  // after rotation; SDPA keeps q, k, v, its output (which o_proj reads through a view: the fused
  // kernels write it [B, T, H, hd]) and an fp32 logsumexp per head. SwiGLU keeps gate, silu(gate),
  // up and their product.
  // Selective recomputes the norms from their input (kept with the output the linears read) and
  // SwiGLU's product from gate and up (down_proj's input is not kept): attention is unchanged.
  const bool selective = mode == Recompute::Selective;
  const int64_t norms = 2 * (selective ? 2 * s * D : (4 + 2 * s) * D + 4);
  const int64_t attention = s * (2 * dq + 2 * dkv) + 4 * c.num_attention_heads;
  const int64_t mlp = (selective ? 2 : 4) * s * c.intermediate_size;
  return norms + attention + mlp;
}

namespace {

// The shard group and the replicas of the strategy, as ShardedModel forms them.
void plan_groups(const MemoryPlanInput& in, MemoryPlan& p) {
  switch (in.strategy) {
    case ShardStrategy::NoShard: p.shard_world = 1; break;
    case ShardStrategy::HybridShard: {
      int g = in.hybrid_group_size > 0 ? in.hybrid_group_size : std::min(in.gpus_per_node, in.world);
      if (in.world % g != 0) fail("dist.hybrid_group_size {} does not divide the world size {}", g, in.world);
      p.shard_world = g;
      break;
    }
    default: p.shard_world = in.world;
  }
  p.replicas = in.strategy == ShardStrategy::NoShard ? in.world : in.world / p.shard_world;
}

// Parameters (masters, gathered), optimizer state and gradients, from the groups' shard layouts.
void plan_parameters(const MemoryPlanInput& in, bool per_unit, MemoryPlan& p) {
  const bool resident = !per_unit;
  const int64_t S = p.shard_world;
  const int64_t s = c10::elementSize(in.compute_dtype);
  int64_t groups = 0, largest_unit_numel = 0, last_unit = 0, last_group = 0, pinned = 0;
  for (const auto& run : unit_runs(in.model)) {
    // A run's first two units meet every neighbour pair it has; the others only add to the sums.
    for (int64_t r = 0; r < std::min<int64_t>(run.repeat, 2); ++r) {
      const int64_t times = r == 0 ? 1 : run.repeat - 1;
      int64_t unit_padded = 0, unit_numel = 0;
      for (int64_t n : run.groups) {
        const ShardLayout group(n, S);
        p.numel += times * n;
        unit_numel += n;
        unit_padded += group.padded();
        p.shard_numel += times * group.shard_numel();
        pinned += times * pinned_block(4 * group.shard_numel());
        p.largest_group_padded = std::max(p.largest_group_padded, group.padded());
        p.largest_group_pair_padded = std::max(p.largest_group_pair_padded, last_group + group.padded());
        last_group = group.padded();
        groups += times;
      }
      p.padded += times * unit_padded;
      p.largest_unit_padded = std::max(p.largest_unit_padded, unit_padded);
      p.largest_unit_pair_padded = std::max(p.largest_unit_pair_padded, last_unit + unit_padded);
      last_unit = unit_padded;
      largest_unit_numel = std::max(largest_unit_numel, unit_numel);
    }
  }

  // The fp32 masters, AdamW's moments and steps live on the device, or with offload on the host
  // beside the fp32 grads copied out after backward.
  const bool offload = in.offload == Offload::Optimizer;
  const int64_t master = 4 * p.shard_numel, optimizer = 2 * 4 * p.shard_numel + 4 * groups;
  if (offload) {
    // The pinned fp32 masters and grads come from LibTorch's caching host allocator, which rounds
    // each block up to a power of two (a 7B layer's 810 MB group takes 1 GiB).
    p.host = 2 * pinned + optimizer;
    // Per unit, the gathers read a compute-dtype copy of the shard (resident, it is the full buffer).
    if (per_unit) p.shard_copy = s * p.shard_numel;
  } else {
    p.master = master;
    p.optimizer = optimizer;
  }
  if (resident) {
    // A group of one computes on its fp32 masters directly (kept on the device without offload);
    // otherwise a full compute-dtype copy.
    p.gathered = p.shard_world == 1 && s == 4 && !offload ? 0 : s * p.padded;
  } else if (!in.reshard_after_forward && in.recompute != Recompute::Full) {
    p.gathered = s * p.padded;  // every unit stays gathered from its forward to its backward
  } else {
    p.gathered = s * (in.prefetch ? p.largest_unit_pair_padded : p.largest_unit_padded);
  }
  p.shard_grads = 4 * p.shard_numel;
  if (per_unit) {
    // Inside one unit's backward: autograd's grads of that unit, flattened group by group (with
    // prefetch, all of its groups, while the following unit's flat grads are still reducing).
    p.compute_grads = s * largest_unit_numel;
    p.grad_flat = 4 * (in.prefetch ? p.largest_unit_pair_padded : p.largest_group_padded);
  } else {
    // Resident: each unit's autograd grads live only until its backward folds them into the fp32
    // accumulator: the shard grads themselves where a rank holds whole groups (a shard group of one,
    // no_shard), else (shard_grad_op) a full fp32 buffer reduce-scattered into them by finish_backward.
    p.compute_grads = s * largest_unit_numel;
    p.grad_flat = p.shard_world > 1 ? 4 * p.padded : 0;
  }
}

// One micro-batch's activations, and the peaks of forward and backward.
void plan_activations(const MemoryPlanInput& in, bool per_unit, MemoryPlan& p) {
  const auto& c = in.model;
  const int64_t s = c10::elementSize(in.compute_dtype);
  const int64_t BT = in.micro_batch * in.seq_len;
  p.recompute = in.recompute;
  p.checkpointing = in.recompute == Recompute::Full;
  p.tokens = 8 * BT;
  p.rope = 2 * s * BT * c.resolved_head_dim();
  p.layer_input = s * BT * c.hidden_size;
  p.layer_full = BT * layer_activation_bytes_per_token(c, in.compute_dtype, in.recompute);
  // The head's norm keeps its fp32 input, the rsqrt and the normalised input (not its output:
  // the fused loss saves none of its inputs), and the fused loss keeps its gradients from forward
  // to backward: the fp32 weight grad [V, D] and the hidden grad. Its logits exist one chunk at a
  // time (fp32 and a compute-dtype copy), ~256 MB on a GPU (loss.cpp).
  p.head_saved = BT * ((4 + s) * c.hidden_size + 4) + 4 * c.vocab_size * c.hidden_size + s * BT * c.hidden_size;
  const int64_t chunk_rows = std::min<int64_t>(BT, linear_cross_entropy_chunk_rows(c.vocab_size, /*on_cpu=*/false));
  p.logits = (s + 4) * chunk_rows * c.vocab_size;
  const int64_t layers = c.num_hidden_layers * (p.checkpointing ? p.layer_input : p.layer_full);
  p.activations_saved = p.tokens + p.rope + layers + p.head_saved;
  // Transient: one chunk of logits in forward, a chunk's fp32 head weight grad product before it is
  // added (a 2-byte compute dtype on CUDA: mm with an fp32 out_dtype), or a checkpointed layer's
  // recompute (one layer's full graph).
  const int64_t transient = std::max({p.logits, s < 4 ? 4 * c.vocab_size * c.hidden_size : int64_t{0},
                                      p.checkpointing ? p.layer_full : int64_t{0}});
  p.activations_peak = p.activations_saved + transient;
  // Grads alive while a later micro-batch's activations are: the fp32 accumulator, which is the
  // shard grads (per-unit strategies reduce each micro-batch into them; a rank holding whole groups
  // folds into them) or shard_grad_op's full buffer.
  const int64_t accumulator = !per_unit && p.grad_flat > 0 ? p.grad_flat : p.shard_grads;
  const int64_t carried = in.grad_accum > 1 ? accumulator : 0;
  // Backward starts with every activation still saved. Resident strategies then add the head
  // groups' part of the accumulator (unless carried already). Per unit, the head's backward holds
  // its own compute-dtype grads and fp32 flat buffer; the next unit's (the last layer's) holds the
  // layers' activations, that layer's grads, flat buffer and (recomputing) graph, with the head's
  // reduce-scatter still in flight. The larger of the two moments is the backward's start.
  const auto units = unit_runs(c);
  auto numel_padded = [&](const UnitRun& unit) {
    int64_t numel = 0, padded = 0;
    for (int64_t n : unit.groups) numel += n, padded += ShardLayout(n, p.shard_world).padded();
    return std::pair<int64_t, int64_t>{numel, padded};
  };
  const auto [head_numel, head_padded] = numel_padded(units.back());
  int64_t backward_start = p.activations_peak + (carried > 0 ? 0 : 4 * head_padded);
  if (per_unit) {
    backward_start = p.activations_peak + s * head_numel + 4 * head_padded;
    if (c.num_hidden_layers > 0) {
      const auto [layer_numel, layer_padded] = numel_padded(units[1]);
      backward_start = std::max(backward_start, p.activations_saved - p.head_saved + s * layer_numel +
                                                    4 * layer_padded + 4 * head_padded +
                                                    (p.checkpointing ? p.layer_full : int64_t{0}));
    }
  }
  p.forward_peak = p.params() + p.optimizer + carried + backward_start;
  p.backward_peak = p.params() + p.optimizer + p.grads();
}

// Communication and compute per optimizer step. A collective whose group spans nodes runs at the
// network's speed; one inside a node at NVLink's.
void plan_time(const MemoryPlanInput& in, const Hardware& hw, MemoryPlan& p) {
  const int64_t S = p.shard_world;
  const int64_t s = c10::elementSize(in.compute_dtype);
  const double P = static_cast<double>(p.padded), A = static_cast<double>(in.grad_accum);
  const bool group_spans_nodes = S > in.gpus_per_node;
  double shard_group_bytes = 0, replica_bytes = 0;
  switch (in.strategy) {
    case ShardStrategy::FullShard:
    case ShardStrategy::HybridShard:
      // Every micro-batch: gather for forward, again for backward (unless kept), reduce-scatter fp32.
      shard_group_bytes =
          A * gather_or_scatter(((in.reshard_after_forward || in.recompute == Recompute::Full ? 2.0 : 1.0) * s + 4.0) * P, S);
      // Replicas all-reduce the fp32 shard grads once per step.
      replica_bytes = 2.0 * gather_or_scatter(4.0 * static_cast<double>(p.shard_numel), p.replicas);
      break;
    case ShardStrategy::ShardGradOp:
      shard_group_bytes = gather_or_scatter((4.0 + s) * P, S);  // reduce-scatter + post-step gather
      break;
    case ShardStrategy::NoShard:
      replica_bytes = 2.0 * gather_or_scatter(4.0 * P, in.world);
      break;
  }
  (group_spans_nodes ? p.inter_bytes : p.intra_bytes) += shard_group_bytes;
  // Replica groups stride across shard groups: across nodes unless the whole world is one node.
  (in.world > in.gpus_per_node ? p.inter_bytes : p.intra_bytes) += replica_bytes;
  p.comm_s = p.intra_bytes / (hw.intra_node_gbs * 1e9) + p.inter_bytes / (hw.inter_node_gbs * 1e9);

  p.flops = training_flops_per_token(in.model, in.seq_len).full * static_cast<double>(in.micro_batch * in.seq_len) * A;
  p.compute_s = p.flops / (hw.peak_tflops * 1e12);
}

}  // namespace

MemoryPlan plan_memory(const MemoryPlanInput& in, const Hardware& hw) {
  if (in.model.tie_word_embeddings)
    fail("sharded training of a model with tied embeddings is not supported (Llama-2 is untied)");
  if (in.world < 1 || in.gpus_per_node < 1 || in.seq_len < 1 || in.micro_batch < 1 || in.grad_accum < 1)
    fail("plan: world, gpus per node, seq_len, micro-batch and accumulation must be positive");
  // The plan counts bytes in int64: a shape whose bytes would pass ~2^62 (a mistyped or damaged
  // config) is refused here, before a sum can wrap or a per-layer loop runs a billion times.
  const auto& c = in.model;
  const double tokens = static_cast<double>(in.micro_batch) * static_cast<double>(in.seq_len);
  const double rough = 32.0 * count_parameters_approx(c) +
                       tokens * (64.0 * static_cast<double>(c.num_hidden_layers) *
                                     (static_cast<double>(c.hidden_size) + static_cast<double>(c.intermediate_size)) +
                                 8.0 * static_cast<double>(c.vocab_size));
  if (!(rough < 0x1p62))
    fail("plan: a model of {:.4g} parameters at {} x {} tokens is beyond any device (about {:.3g} bytes); check "
         "the model shape",
         count_parameters_approx(c), in.micro_batch, in.seq_len, rough);
  MemoryPlan p;
  plan_groups(in, p);
  // A shard group of one keeps every unit resident unless dist.single_rank_path says per_unit
  // (ShardedModel::per_unit).
  const bool sharded_units = in.strategy == ShardStrategy::FullShard || in.strategy == ShardStrategy::HybridShard;
  const bool per_unit =
      sharded_units && (p.shard_world > 1 || in.single_rank_path == SingleRankPath::PerUnit);
  plan_parameters(in, per_unit, p);
  plan_activations(in, per_unit, p);
  plan_time(in, hw, p);
  return p;
}

int ranks_per_node(const MemoryPlanInput& in) { return std::min(in.world, in.gpus_per_node); }

int64_t host_bytes_needed(const MemoryPlan& p, const MemoryPlanInput& in, const MemoryLimits& limits) {
  return ranks_per_node(in) * (p.host + (limits.device_is_host ? p.total() : 0));
}

bool fits(const MemoryPlan& p, const MemoryPlanInput& in, const MemoryLimits& limits) {
  auto within = [](int64_t need, int64_t have) { return static_cast<double>(need) <= kUsableFraction * have; };
  if (!limits.device_is_host && !within(p.total(), limits.device_bytes)) return false;
  return limits.host_bytes < 0 || within(host_bytes_needed(p, in, limits), limits.host_bytes);
}

namespace {

template <typename E>
std::vector<E> from(E first, E last) {
  std::vector<E> out;
  for (int v = static_cast<int>(first); v <= static_cast<int>(last); ++v) out.push_back(static_cast<E>(v));
  return out;
}

// a changes nothing that b does not change as far or further.
bool no_more_than(const Alternative& a, const Alternative& b) {
  return a.world <= b.world && a.offload <= b.offload && a.recompute <= b.recompute && a.micro_batch >= b.micro_batch;
}

}  // namespace

std::vector<Alternative> fitting_alternatives(const MemoryPlanInput& in, int64_t global_batch,
                                              const MemoryLimits& limits, const Hardware& hw, int max_world) {
  if (global_batch < 1) fail("plan: the global batch must be at least one sequence");
  const int64_t top_world = max_world > 0 ? max_world : global_batch;
  std::vector<Alternative> fitting;
  for (int world = in.world; world <= top_world; ++world)
    for (int64_t micro = in.micro_batch; micro >= 1; --micro) {
      if (global_batch % (micro * world) != 0) continue;
      for (Recompute recompute : from(in.recompute, Recompute::Full))
        for (Offload offload : from(in.offload, Offload::Optimizer)) {
          if (world == in.world && micro == in.micro_batch && recompute == in.recompute && offload == in.offload)
            continue;
          Alternative a{recompute, offload, micro, world, in, {}};
          a.input.world = world, a.input.micro_batch = micro, a.input.recompute = recompute, a.input.offload = offload;
          a.input.grad_accum = global_batch / (micro * world);
          try {
            a.plan = plan_memory(a.input, hw);
          } catch (const Error&) {
            continue;  // a world the strategy cannot form (a hybrid group that does not divide it)
          }
          if (fits(a.plan, a.input, limits)) fitting.push_back(std::move(a));
        }
    }
  std::vector<Alternative> minimal;
  for (size_t i = 0; i < fitting.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < fitting.size() && !dominated; ++j) dominated = j != i && no_more_than(fitting[j], fitting[i]);
    if (!dominated) minimal.push_back(fitting[i]);
  }
  auto intrusion = [](const Alternative& a) {
    return std::make_tuple(a.world, static_cast<int>(a.offload), static_cast<int>(a.recompute), -a.micro_batch);
  };
  std::stable_sort(minimal.begin(), minimal.end(),
                   [&](const Alternative& a, const Alternative& b) { return intrusion(a) < intrusion(b); });
  return minimal;
}

}  // namespace agenttune::parallel
