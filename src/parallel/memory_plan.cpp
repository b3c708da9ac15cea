#include "agenttune/parallel/memory_plan.h"

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <string_view>
#include <tuple>
#include <vector>

#include "agenttune/model/flops.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/shard_layout.h"
#include "agenttune/quant/nf4.h"
#include "agenttune/util/error.h"

namespace agenttune::parallel {

namespace {

// ShardedModel's flat groups, unit by unit in build order, as runs of equal units: the embedding,
// the decoder layers (one unit repeated num_hidden_layers times), the norm + head. Runs keep a
// damaged config's billion layers from being walked one by one. `groups` are the trained ones
// (element counts); with adapters the base is a unit's frozen group (compute-dtype elements) and,
// QLoRA, its group of NF4 records (bytes).
struct UnitRun {
  std::vector<int64_t> groups;
  int64_t frozen = 0, nf4_bytes = 0;
  int64_t repeat = 1;
  // A tied head: the embedding's table, trained (its group) or frozen, which the head gathers and
  // reduces as its own but which is held (master, grad, AdamW state, base) once, in the embedding's unit.
  std::vector<int64_t> tied_groups;
  int64_t tied_frozen = 0;
};

struct Projection {
  std::string_view name;
  int64_t in, out;
};

std::array<Projection, 7> projections(const LlamaConfig& c) {
  const int64_t D = c.hidden_size, F = c.intermediate_size, hd = c.resolved_head_dim();
  const int64_t dq = c.num_attention_heads * hd, dkv = c.num_key_value_heads * hd;
  return {{{"q_proj", D, dq}, {"k_proj", D, dkv}, {"v_proj", D, dkv}, {"o_proj", dq, D},
           {"gate_proj", D, F}, {"up_proj", D, F}, {"down_proj", F, D}}};
}

std::vector<UnitRun> unit_runs(const LlamaConfig& c, const AdapterConfig& adapter) {
  const int64_t D = c.hidden_size, V = c.vocab_size;
  int64_t matrices = 0, adapters = 0, records = 0;
  for (const auto& p : projections(c)) {
    matrices += p.in * p.out;
    if (adapter.targets(p.name)) adapters += adapter.rank * (p.in + p.out);
    records += quant::nf4_record_bytes(p.in * p.out);
  }
  const int64_t vectors = layer_vector_parameters(c);  // norms and biases: the no-decay group
  const bool tied = c.tie_word_embeddings;
  if (!adapter.enabled()) {
    UnitRun head = tied ? UnitRun{{D}, 0, 0, 1, {V * D}, 0} : UnitRun{{V * D, D}, 0, 0, 1, {}, 0};
    return {{{V * D}, 0, 0, 1, {}, 0}, {{matrices, vectors}, 0, 0, c.num_hidden_layers, {}, 0}, head};
  }
  // Adapters are matrices: one decayed group per layer; every other parameter is frozen.
  std::vector<int64_t> trained;
  if (adapters > 0) trained.push_back(adapters);
  const bool nf4 = adapter.kind == AdapterKind::Qlora;
  return {{{}, V * D, 0, 1, {}, 0},
          {trained, vectors + (nf4 ? 0 : matrices), nf4 ? records : 0, c.num_hidden_layers, {}, 0},
          tied ? UnitRun{{}, D, 0, 1, {}, V * D} : UnitRun{{}, V * D + D, 0, 1, {}, 0}};
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

namespace {

// Qwen3's per-head q/k RMSNorms keep, like the layer norms, their fp32 input, an fp32 rsqrt per
// head and the normalised values in the compute dtype for the weight's grad; zero for other families.
int64_t qk_norm_bytes_per_token(const LlamaConfig& c, int64_t s) {
  if (!c.qk_norm()) return 0;
  const int64_t heads = c.num_attention_heads + c.num_key_value_heads;
  return (4 + s) * heads * c.resolved_head_dim() + 4 * heads;
}

int64_t targeted(const AdapterConfig& adapter, std::initializer_list<std::string_view> names) {
  int64_t n = 0;
  for (auto name : names) n += adapter.targets(name) ? 1 : 0;
  return n;
}

// A layer whose base is frozen: no weight grad needs a linear's input, so an activation is kept
// only where some gradient still reads it. Each RMSNorm keeps its fp32 input and rsqrt (its frozen
// weight's mul keeps nothing; selective keeps only the norm's input); attention as without adapters;
// SwiGLU keeps gate, silu(gate) and up, and its product only for a down_proj adapter (selective's
// SwiGLULinear, used when down_proj is plain, keeps gate and up). Each adapter keeps its rank-r
// A x for B's grad and its input for A's: the input the projections share (SDPA keeps o_proj's
// anyway), or with dropout its own dropped copy and the one-byte mask (CUDA's fused dropout).
int64_t adapted_layer_bytes_per_token(const LlamaConfig& c, int64_t s, Recompute mode, const AdapterConfig& a) {
  const int64_t D = c.hidden_size, F = c.intermediate_size, hd = c.resolved_head_dim();
  const int64_t dq = c.num_attention_heads * hd, dkv = c.num_key_value_heads * hd;
  const bool selective = mode == Recompute::Selective, dropout = a.dropout > 0;
  auto adapters_on = [&](std::initializer_list<std::string_view> names, int64_t in, bool kept_anyway) -> int64_t {
    const int64_t n = targeted(a, names);
    if (n == 0) return 0;
    return n * s * a.rank + (dropout ? n * (s + 1) * in : kept_anyway ? 0 : s * in);
  };
  const int64_t norms = 2 * (selective ? s * D : 4 * D + 4);
  const int64_t attention = s * (2 * dq + 2 * dkv) + 4 * c.num_attention_heads;
  const bool swiglu_linear = selective && !a.targets("down_proj") && a.kind != AdapterKind::Qlora;
  const int64_t mlp = (swiglu_linear ? 2 : 3) * s * F;
  return norms + qk_norm_bytes_per_token(c, s) + attention + mlp + adapters_on({"q_proj", "k_proj", "v_proj"}, D, false) +
         adapters_on({"o_proj"}, dq, true) + adapters_on({"gate_proj", "up_proj"}, D, false) +
         adapters_on({"down_proj"}, F, false);
}

}  // namespace

int64_t layer_activation_bytes_per_token(const LlamaConfig& c, c10::ScalarType compute_dtype, Recompute mode,
                                         const AdapterConfig& adapter) {
  const int64_t s = c10::elementSize(compute_dtype);
  if (adapter.enabled()) return adapted_layer_bytes_per_token(c, s, mode, adapter);
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
  return norms + qk_norm_bytes_per_token(c, s) + attention + mlp;
}

int64_t layer_backward_bytes(const LlamaConfig& c, c10::ScalarType compute_dtype, Recompute mode, int64_t tokens,
                             const AdapterConfig& adapter) {
  const int64_t s = c10::elementSize(compute_dtype);
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  // The layer's backward starts from its output's grad (held until it returns) and first walks the
  // MLP, where it holds the most (attention's grads are over fewer features than SwiGLU's). Plain:
  // down_proj's backward makes its input's grad and weight grad and frees the product it saved, then
  // mul's makes the grads of silu(gate) and of up while that input grad is alive: 3F made, F freed.
  // A down_proj adapter frees what it kept instead (the product, or its dropped copy and mask, and
  // its A x); a frozen down_proj without one kept nothing.
  // Selective: gate and up are all it saved; SwiGLULinear's backward forms silu(gate) and the product
  // (freed after the weight grad), then the product's grad, up's grad (freeing silu(gate)), grad * up
  // and silu_backward's output are alive at once: 4F. Full re-runs the layer as plain first: its
  // whole graph and its output, then plain's moment. The weight grads made by then: down_proj's,
  // or its adapter's.
  const bool down_adapter = adapter.targets("down_proj") && adapter.enabled();
  const bool swiglu_linear = !adapter.enabled() || (!down_adapter && adapter.kind != AdapterKind::Qlora);
  int64_t freed = 0;
  if (!adapter.enabled()) freed = s * F;
  if (down_adapter) freed = (adapter.dropout > 0 ? (s + 1) * F : s * F) + s * adapter.rank;
  const int64_t plain = s * D + 3 * s * F - freed;
  int64_t per_token = plain;
  if (mode == Recompute::Selective && swiglu_linear) per_token = s * D + 4 * s * F;
  const int64_t weight_grads = !adapter.enabled() ? s * D * F : down_adapter ? s * adapter.rank * (D + F) : 0;
  if (mode != Recompute::Full) return tokens * per_token + weight_grads;
  // Not counted: with LoRA dropout the re-run's own forward transients (its dropped copies beside
  // the inputs) can exceed this; the fake device measures up to ~15 % more step peak there.
  per_token = layer_activation_bytes_per_token(c, compute_dtype, Recompute::None, adapter) + s * D + plain;
  return tokens * per_token + weight_grads;
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
  // Gathered bytes of a unit (trained groups and frozen base), the largest and the largest neighbours.
  int64_t unit_gathered = 0, pair_gathered = 0, last_gathered = 0, base_shard = 0, base_full = 0;
  for (const auto& run : unit_runs(in.model, in.adapter)) {
    // A run's first two units meet every neighbour pair it has; the others only add to the sums.
    for (int64_t r = 0; r < std::min<int64_t>(run.repeat, 2); ++r) {
      const int64_t times = r == 0 ? 1 : run.repeat - 1;
      const ShardLayout frozen(run.frozen, S), nf4(run.nf4_bytes, S);
      p.frozen_numel += times * run.frozen;
      p.frozen_nf4_bytes += times * run.nf4_bytes;
      base_shard += times * (s * frozen.shard_numel() + nf4.shard_numel());
      base_full += times * (s * frozen.padded() + nf4.padded());
      // What the unit gathers and reduces: its own groups, counted once in the totals, then a tied
      // head's share of the embedding's, counted only in what is gathered or in flight at once.
      int64_t unit_padded = 0, unit_numel = 0, tied_padded = 0;
      for (int64_t n : run.tied_groups) {
        const ShardLayout group(n, S);
        unit_numel += n;
        tied_padded += group.padded();
        p.largest_group_padded = std::max(p.largest_group_padded, group.padded());
      }
      const ShardLayout tied_frozen(run.tied_frozen, S);
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
      unit_padded += tied_padded;
      p.largest_unit_padded = std::max(p.largest_unit_padded, unit_padded);
      p.largest_unit_pair_padded = std::max(p.largest_unit_pair_padded, last_unit + unit_padded);
      last_unit = unit_padded;
      largest_unit_numel = std::max(largest_unit_numel, unit_numel);
      const int64_t gathered = s * (unit_padded + frozen.padded() + tied_frozen.padded()) + nf4.padded();
      unit_gathered = std::max(unit_gathered, gathered);
      pair_gathered = std::max(pair_gathered, last_gathered + gathered);
      last_gathered = gathered;
    }
  }
  // The frozen base: per unit each rank keeps its shard and gathers like the trained groups;
  // resident paths keep it whole (shard_grad_op frees its shard after the one gather).
  p.base = per_unit ? base_shard : base_full;
  if (in.adapter.kind == AdapterKind::Qlora) {
    // nf4_linear dequantises one projection into a compute-dtype weight through an fp32 values buffer
    // and an int32 index per two weights, and frees them after its matmul (forward and backward).
    int64_t largest = 0;
    for (const auto& proj : projections(in.model)) largest = std::max(largest, proj.in * proj.out);
    p.dequantized = (s + 4 + 2) * largest;
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
    p.gathered = s * p.padded + base_full;  // every unit stays gathered from its forward to its backward
  } else {
    p.gathered = in.prefetch ? pair_gathered : unit_gathered;
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
  p.layer_full = BT * layer_activation_bytes_per_token(c, in.compute_dtype, in.recompute, in.adapter);
  // The head's norm keeps its fp32 input, the rsqrt and the normalised input (not its output:
  // the fused loss saves none of its inputs), and the fused loss keeps its gradients from forward
  // to backward: the fp32 weight grad [V, D] and the hidden grad. Its logits exist one chunk at a
  // time (fp32 and a compute-dtype copy), ~256 MB on a GPU (loss.cpp).
  // With adapters the head is frozen: its norm keeps no normalised copy for the weight's grad, and
  // the loss makes no weight grad.
  const bool head_trains = !in.adapter.enabled();
  p.head_saved = BT * ((head_trains ? 4 + s : 4) * c.hidden_size + 4) +
                 (head_trains ? 4 * c.vocab_size * c.hidden_size : int64_t{0}) + s * BT * c.hidden_size;
  const int64_t chunk_rows = std::min<int64_t>(BT, linear_cross_entropy_chunk_rows(c.vocab_size, /*on_cpu=*/false));
  p.logits = (s + 4) * chunk_rows * c.vocab_size;
  const int64_t layers = c.num_hidden_layers * (p.checkpointing ? p.layer_input : p.layer_full);
  p.activations_saved = p.tokens + p.rope + layers + p.head_saved;
  // Forward's end: everything saved, and inside the fused loss the head's input (the norm's output
  // and the copy of its trained rows), one chunk of logits and, in a 2-byte compute dtype, what
  // folding that chunk into the fp32 weight grad takes: on CUDA an fp32 [V, D] product (mm with an
  // fp32 out_dtype), elsewhere the chunk's hidden rows upcast. The last layer's backward: the head's
  // saved tensors are gone by then, that layer's working set is not.
  // The first chunk's product is the weight grad itself (loss.cpp's add_weight_grad): only a
  // second chunk onwards allocates the fp32 [V, D] product it adds.
  const int64_t weight_grad_fold = s < 4 && head_trains && BT > chunk_rows
                                       ? 4 * std::max(c.vocab_size, chunk_rows) * c.hidden_size
                                       : int64_t{0};
  const int64_t forward_end = p.activations_saved + 2 * s * BT * c.hidden_size + p.logits + weight_grad_fold;
  p.layer_backward = c.num_hidden_layers > 0 ? layer_backward_bytes(c, in.compute_dtype, in.recompute, BT, in.adapter) : 0;
  const int64_t last_layer = p.activations_saved - p.head_saved + p.layer_backward;
  p.activations_peak = std::max(forward_end, last_layer);
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
  const auto units = unit_runs(c, in.adapter);
  auto numel_padded = [&](const UnitRun& unit) {
    int64_t numel = 0, padded = 0;
    for (int64_t n : unit.groups) numel += n, padded += ShardLayout(n, p.shard_world).padded();
    for (int64_t n : unit.tied_groups) numel += n, padded += ShardLayout(n, p.shard_world).padded();
    return std::pair<int64_t, int64_t>{numel, padded};
  };
  const auto [head_numel, head_padded] = numel_padded(units.back());
  // The head's accumulator appears at its backward, after the fused loss's chunk is gone: it
  // meets what stays saved (and the last layer's working set), not the loss's transient peak.
  int64_t backward_start = std::max(forward_end, std::max(p.activations_saved, last_layer) +
                                                     (carried > 0 ? 0 : 4 * head_padded));
  if (per_unit) {
    // The head's grads and flat buffer at forward's end, the last layer's working set with the head's
    // reduction in flight, or that layer's grads flattened.
    backward_start = std::max(forward_end + s * head_numel, last_layer) + 4 * head_padded;
    if (c.num_hidden_layers > 0) {
      const auto [layer_numel, layer_padded] = numel_padded(units[1]);
      backward_start = std::max(backward_start, p.activations_saved - p.head_saved + s * layer_numel +
                                                    4 * layer_padded + 4 * head_padded +
                                                    (p.checkpointing ? p.layer_full : int64_t{0}));
    }
  }
  p.forward_peak = p.params() + p.optimizer + carried + backward_start;
  p.backward_peak = p.params() + p.optimizer + p.grads();
  if (c.num_hidden_layers > 0) {
    // The first decoder layer, walked last: the accumulators hold every unit's grads but its own and
    // the embedding's (each group's is allocated when its first grads land), its own activations and
    // working set are alive, and per unit the second layer's flat grads are still reducing.
    const auto [layer_numel, layer_padded] = numel_padded(units[1]);
    // A tied table's accumulator arrived with the head's backward, long before.
    const int64_t embed_padded = c.tie_word_embeddings ? 0 : numel_padded(units.front()).second;
    const int64_t sharded = per_unit || p.shard_world == 1 ? p.shard_world : 1;  // shard_grad_op's are full
    const int64_t to_come = 4 * (embed_padded + layer_padded) / sharded;
    const int64_t landed = carried > 0 ? carried : accumulator - to_come;
    const int64_t first_layer = p.tokens + p.rope + (p.checkpointing ? p.layer_input : p.layer_full) + p.layer_backward;
    p.backward_peak = std::max(p.backward_peak, p.params() + p.optimizer + landed + first_layer +
                                                    (per_unit ? 4 * layer_padded : int64_t{0}));
  }
}

// Communication and compute per optimizer step. A collective whose group spans nodes runs at the
// network's speed; one inside a node at NVLink's.
void plan_time(const MemoryPlanInput& in, const Hardware& hw, MemoryPlan& p) {
  const int64_t S = p.shard_world;
  const int64_t s = c10::elementSize(in.compute_dtype);
  const double P = static_cast<double>(p.padded), A = static_cast<double>(in.grad_accum);
  // A frozen base is gathered with its unit on the per-unit path (shard_grad_op gathers it once).
  const double base = static_cast<double>(s * p.frozen_numel + p.frozen_nf4_bytes);
  // Per unit, a tied table is gathered for the embedding and again for the head, and a trained one
  // reduce-scattered after each of their backwards: what an untied model's two matrices cost.
  const double table = in.model.tie_word_embeddings
                           ? static_cast<double>(ShardLayout(in.model.vocab_size * in.model.hidden_size, S).padded())
                           : 0.0;
  const double tied_trained = in.adapter.enabled() ? 0.0 : table, tied_frozen = in.adapter.enabled() ? s * table : 0.0;
  const bool group_spans_nodes = S > in.gpus_per_node;
  double shard_group_bytes = 0, replica_bytes = 0;
  switch (in.strategy) {
    case ShardStrategy::FullShard:
    case ShardStrategy::HybridShard:
      // Every micro-batch: gather for forward, again for backward (unless kept), reduce-scatter fp32.
      shard_group_bytes =
          A * (gather_or_scatter((in.reshard_after_forward || in.recompute == Recompute::Full ? 2.0 : 1.0) *
                                     (s * (P + tied_trained) + base + tied_frozen), S) +
               gather_or_scatter(4.0 * (P + tied_trained), S));
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

  // With adapters no frozen weight gets a grad (2 of the 6 FLOPs per weight and token are gone); the
  // adapters' own matmuls are counted whole.
  const auto per_token = training_flops_per_token(in.model, in.seq_len);
  const double flops = in.adapter.enabled()
                           ? per_token.full - 2.0 * static_cast<double>(per_token.matmul_params) +
                                 6.0 * static_cast<double>(p.numel)
                           : per_token.full;
  p.flops = flops * static_cast<double>(in.micro_batch * in.seq_len) * A;
  p.compute_s = p.flops / (hw.peak_tflops * 1e12);
}

}  // namespace

MemoryPlan plan_memory(const MemoryPlanInput& in, const Hardware& hw) {
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
