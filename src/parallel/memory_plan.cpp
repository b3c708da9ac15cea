#include "agenttune/parallel/memory_plan.h"

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <vector>

#include "agenttune/model/flops.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/shard_layout.h"
#include "agenttune/util/error.h"

namespace agenttune::parallel {

namespace {

// Element counts of ShardedModel's flat groups, unit by unit, in its build order.
std::vector<std::vector<int64_t>> unit_groups(const LlamaConfig& c) {
  const int64_t D = c.hidden_size, hd = c.resolved_head_dim();
  const int64_t matrices = D * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads) +
                           3 * D * c.intermediate_size;
  std::vector<std::vector<int64_t>> units{{c.vocab_size * D}};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) units.push_back({matrices, 2 * D});
  units.push_back({c.vocab_size * D, D});
  return units;
}

// The ring cost per GPU of one collective over n ranks on a buffer of `bytes`.
double gather_or_scatter(double bytes, int n) { return n > 1 ? bytes * (n - 1) / n : 0.0; }

}  // namespace

int64_t layer_activation_bytes_per_token(const LlamaConfig& c, c10::ScalarType compute_dtype) {
  const int64_t s = c10::elementSize(compute_dtype);
  const int64_t D = c.hidden_size, hd = c.resolved_head_dim();
  const int64_t dq = c.num_attention_heads * hd, dkv = c.num_key_value_heads * hd;
  // Each RMSNorm keeps its fp32 input (the upcast copy, or the input itself in fp32) for pow's
  // backward, the fp32 rsqrt per token, the normalised input in the compute dtype for the weight's
  // grad, and its output (for the q/k/v or gate/up linears' grads). RoPE multiplies by constant tables, so autograd keeps only q and k
  // after rotation; SDPA keeps q, k, v, its output (which o_proj reads through a view: the fused
  // kernels write it [B, T, H, hd]) and an fp32 logsumexp per head. SwiGLU keeps gate, silu(gate),
  // up and their product.
  const int64_t norms = 2 * ((4 + 2 * s) * D + 4);
  const int64_t attention = s * (2 * dq + 2 * dkv) + 4 * c.num_attention_heads;
  const int64_t mlp = 4 * s * c.intermediate_size;
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
  int64_t groups = 0, largest_unit_numel = 0, last_unit = 0, last_group = 0;
  for (const auto& unit : unit_groups(in.model)) {
    int64_t unit_padded = 0, unit_numel = 0;
    for (int64_t n : unit) {
      const ShardLayout group(n, S);
      p.numel += n;
      unit_numel += n;
      unit_padded += group.padded();
      p.shard_numel += group.shard_numel();
      p.largest_group_padded = std::max(p.largest_group_padded, group.padded());
      p.largest_group_pair_padded = std::max(p.largest_group_pair_padded, last_group + group.padded());
      last_group = group.padded();
      ++groups;
    }
    p.padded += unit_padded;
    p.largest_unit_padded = std::max(p.largest_unit_padded, unit_padded);
    p.largest_unit_pair_padded = std::max(p.largest_unit_pair_padded, last_unit + unit_padded);
    last_unit = unit_padded;
    largest_unit_numel = std::max(largest_unit_numel, unit_numel);
  }

  p.master = 4 * p.shard_numel;
  p.optimizer = 2 * 4 * p.shard_numel + 4 * groups;
  if (resident) {
    // A group of one computes on its fp32 masters directly; otherwise a full compute-dtype copy.
    p.gathered = p.shard_world == 1 && s == 4 ? 0 : s * p.padded;
  } else if (!in.reshard_after_forward && !in.activation_checkpointing) {
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
  } else if (in.strategy == ShardStrategy::ShardGradOp) {
    // finish_backward's first group: every module grad still alive, one group flattened (with
    // prefetch, bounded by two neighbouring groups: one reducing while the next is flattened).
    p.compute_grads = s * p.numel;
    p.grad_flat = 4 * (in.prefetch ? p.largest_group_pair_padded : p.largest_group_padded);
  } else {
    // no_shard's flat buffer becomes the shard grad; by the last group all others are fp32 already.
    p.compute_grads = s * (p.largest_group_padded);
  }
}

// One micro-batch's activations, and the peaks of forward and backward.
void plan_activations(const MemoryPlanInput& in, bool per_unit, MemoryPlan& p) {
  const auto& c = in.model;
  const int64_t s = c10::elementSize(in.compute_dtype);
  const int64_t BT = in.micro_batch * in.seq_len;
  p.checkpointing = in.activation_checkpointing;
  p.tokens = 8 * BT;
  p.rope = 2 * s * BT * c.resolved_head_dim();
  p.layer_input = s * BT * c.hidden_size;
  p.layer_full = BT * layer_activation_bytes_per_token(c, in.compute_dtype);
  // The head's norm keeps its fp32 input, the rsqrt and the normalised input (not its output:
  // the fused loss saves none of its inputs), and the fused loss keeps its gradients from forward
  // to backward: the fp32 weight grad [V, D] and the hidden grad. Its logits exist one chunk at a
  // time (fp32 and a compute-dtype copy), ~256 MB on a GPU (loss.cpp).
  p.head_saved = BT * ((4 + s) * c.hidden_size + 4) + 4 * c.vocab_size * c.hidden_size + s * BT * c.hidden_size;
  const int64_t chunk_rows = std::min<int64_t>(BT, linear_cross_entropy_chunk_rows(c.vocab_size, /*on_cpu=*/false));
  p.logits = (s + 4) * chunk_rows * c.vocab_size;
  const int64_t layers = c.num_hidden_layers * (p.checkpointing ? p.layer_input : p.layer_full);
  p.activations_saved = p.tokens + p.rope + layers + p.head_saved;
  // Transient: one chunk of logits in forward, the head's weight grad cast to the compute dtype in
  // backward, or a checkpointed layer's recompute (one layer's full graph).
  const int64_t transient = std::max({p.logits, s * c.vocab_size * c.hidden_size,
                                      p.checkpointing ? p.layer_full : int64_t{0}});
  p.activations_peak = p.activations_saved + transient;
  // Grads alive while a later micro-batch's activations are: the shard grads (per-unit strategies
  // reduce each micro-batch into them) or autograd's module grads (the resident ones reduce once).
  const int64_t carried = in.grad_accum > 1 ? (per_unit ? p.shard_grads : s * p.numel) : 0;
  // The first unit's backward (the head) starts with every activation still saved: per-unit
  // strategies then hold that unit's compute grads and its fp32 flat buffers in flight too.
  const int64_t first_unit_backward = per_unit ? p.compute_grads + p.grad_flat : 0;
  p.forward_peak = p.params() + p.optimizer + p.activations_peak + carried + first_unit_backward;
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
          A * gather_or_scatter(((in.reshard_after_forward || in.activation_checkpointing ? 2.0 : 1.0) * s + 4.0) * P, S);
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
  MemoryPlan p;
  plan_groups(in, p);
  // A shard group of one keeps every unit resident (ShardedModel::per_unit).
  const bool sharded_units = in.strategy == ShardStrategy::FullShard || in.strategy == ShardStrategy::HybridShard;
  const bool per_unit = sharded_units && p.shard_world > 1;
  plan_parameters(in, per_unit, p);
  plan_activations(in, per_unit, p);
  plan_time(in, hw, p);
  return p;
}

}  // namespace agenttune::parallel
