#pragma once
// `agenttune plan`: per-GPU memory, communication and a step-time lower bound for a model shape
// under one of ShardedModel's strategies, computed from the shape alone (nothing is allocated).
//
// The accounting follows what src/parallel/sharded_model.cpp and the Llama layer actually hold, not a
// generic ZeRO formula:
//  - every unit's parameters live in flat groups (decayed matrices, undecayed vectors), each padded
//    to a multiple of the shard group; a rank keeps 1/S of each as an fp32 master, its fp32 grad
//    and two fp32 AdamW moments (plus a 4-byte step per group);
//  - full_shard / hybrid_shard (shard group > 1) gather one unit at a time in the compute dtype and,
//    with reshard_after_forward, free it after forward and gather it again for backward (the
//    layers' graphs are kept unless activation checkpointing recomputes them); with prefetch
//    the next unit is gathering while one computes (two neighbouring units' full params at once)
//    and one unit's fp32 flat grads are in flight while the next unit's are flattened; without
//    prefetch one unit's params and one group's flat grads;
//  - a shard group of one, shard_grad_op and no_shard keep every unit gathered in the compute dtype
//    (a group of one in fp32 computes on the masters themselves); each unit's compute-dtype grads
//    are folded into an fp32 accumulator in its backward (the shard grads where a rank holds whole
//    groups, shard_grad_op's full fp32 buffer otherwise), reduced once by finish_backward().
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

#include "agenttune/parallel/sharded_model.h"
#include "agenttune/model/adapter.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/model/recompute.h"

namespace agenttune::parallel {

struct MemoryPlanInput {
  LlamaConfig model;
  ShardStrategy strategy = ShardStrategy::FullShard;
  int world = 1;
  int gpus_per_node = 8;
  int hybrid_group_size = 0;  // 0 = gpus_per_node (capped at world), as dist.hybrid_group_size
  int64_t seq_len = 4096;
  int64_t micro_batch = 1;
  int64_t grad_accum = 1;  // micro-batches per optimizer step on each rank
  c10::ScalarType compute_dtype = c10::ScalarType::BFloat16;
  Recompute recompute = Recompute::None;  // what layers recompute in backward (model.activation_checkpointing)
  bool reshard_after_forward = true;      // dist.reshard_after_forward
  bool prefetch = true;  // dist.prefetch: overlapped collectives hold a second unit / flat group
  // dist.offload: optimizer moves the fp32 masters and AdamW moments to (pinned) host memory; the
  // device keeps a compute-dtype copy of this rank's shard to gather from (the resident buffer itself
  // on the resident path) and the fp32 grads until they are copied out after backward.
  Offload offload = Offload::None;
  // dist.single_rank_path: per_unit runs a shard group of one through full_shard's per-unit path.
  SingleRankPath single_rank_path = SingleRankPath::Resident;
  // model.adapter: with LoRA only the adapters (rank r on the targeted projections) have masters,
  // grads and AdamW state; the frozen base is kept in the compute dtype, sharded and gathered like
  // the trained parameters (resident where they are); QLoRA keeps the 7 projection weights of every
  // layer as NF4 records (~0.52 bytes per weight) and dequantises one at a time for its matmul.
  AdapterConfig adapter;
};

struct Hardware {
  double peak_tflops = 989;    // dense bf16 per GPU (H100 SXM)
  double intra_node_gbs = 450; // GB/s per GPU per direction (NVLink 4)
  double inter_node_gbs = 50;  // GB/s per GPU (one 400 Gb/s NIC per GPU)
};

// Bytes per GPU. Activation terms are for one micro-batch of micro_batch x seq_len tokens.
struct MemoryPlan {
  int shard_world = 1, replicas = 1;
  int64_t numel = 0, padded = 0, shard_numel = 0;  // padded: sum of groups padded to shard_world
  int64_t largest_unit_padded = 0, largest_group_padded = 0;
  // The largest two neighbouring units / groups together (in build order): what prefetch holds.
  int64_t largest_unit_pair_padded = 0, largest_group_pair_padded = 0;

  int64_t master = 0;         // fp32 shards (AdamW updates these); 0 on the device with offload
  // Adapters: the frozen base this rank keeps between units (its 1/S shard per unit on the per-unit
  // path, else the whole base), compute-dtype and NF4 bytes; and, QLoRA, the largest projection's
  // dense weight with its dequantisation buffers while one matmul runs.
  int64_t frozen_numel = 0, frozen_nf4_bytes = 0;  // the base: compute-dtype elements, NF4 record bytes
  int64_t base = 0;
  int64_t dequantized = 0;
  int64_t gathered = 0;       // compute-dtype full params resident at the peak
  int64_t shard_copy = 0;     // offload, per-unit path: the compute-dtype shard the gathers read
  int64_t shard_grads = 0;    // fp32 grads on the shards, alive from the first backward to the step
  int64_t compute_grads = 0;  // full compute-dtype grads alive at the peak (autograd's)
  int64_t grad_flat = 0;      // the fp32 flat buffer one group's grads are reduced from
  int64_t optimizer = 0;      // exp_avg + exp_avg_sq (fp32, shard-sized) + per-group step; 0 with offload
  // Host memory per rank for offloaded state (0 without offload): the pinned fp32 masters and grads
  // (each group's block rounded up to a power of two, as LibTorch's caching host allocator does),
  // the two fp32 moments and the steps.
  int64_t host = 0;

  Recompute recompute = Recompute::None;
  bool checkpointing = false;  // recompute == Full: a layer keeps only its input
  int64_t tokens = 0;       // int64 token ids (saved by the embedding)
  int64_t rope = 0;         // cos + sin tables [B, T, head_dim] in the compute dtype
  int64_t layer_input = 0;  // one saved layer input, B*T*D in the compute dtype
  int64_t layer_full = 0;   // everything one decoder layer's autograd graph saves
  // What one decoder layer's backward holds beyond the layers' saved activations, at its largest
  // moment (SwiGLU's backward): the incoming grad, the activation grads alive together, down_proj's
  // weight grad; with full recompute also the graph and output its re-run rebuilds.
  int64_t layer_backward = 0;
  int64_t head_saved = 0;   // what the final norm and the fused loss keep (its weight and hidden grads)
  int64_t logits = 0;       // one chunk of logits (fp32 + compute dtype): the fused loss never holds B*T*V
  int64_t activations_saved = 0;  // held from the end of forward into backward
  // The larger of forward's end (everything saved + one chunk of logits) and the last layer's
  // backward (the layers' saved activations, the head's freed, + layer_backward).
  int64_t activations_peak = 0;

  int64_t params() const { return master + gathered + shard_copy + base + dequantized; }
  int64_t grads() const { return shard_grads + compute_grads + grad_flat; }
  // Activations and grads peak at different moments: forward's end (and the first unit's backward)
  // holds every saved activation but only the grads carried over from earlier micro-batches and
  // that unit's own; backward's end holds every grad
  // but no activations. The step's peak is the larger (backward trades one for the other as it
  // walks back, so between the two it stays within a unit's worth of them).
  int64_t forward_peak = 0;
  int64_t backward_peak = 0;
  int64_t total() const { return forward_peak > backward_peak ? forward_peak : backward_peak; }

  // Per GPU per optimizer step, counting what a ring sends (= receives): (n-1)/n of the buffer
  // for all-gather / reduce-scatter, twice that for all-reduce.
  double intra_bytes = 0, inter_bytes = 0;
  double flops = 0;        // 6N + 12LdT per token, times this rank's tokens per step
  double compute_s = 0, comm_s = 0;
  double step_bound_s() const { return compute_s > comm_s ? compute_s : comm_s; }
};

MemoryPlan plan_memory(const MemoryPlanInput& in, const Hardware& hw = {});

// Bytes one decoder layer's autograd graph saves per token (the Korthikanti et al. accounting,
// done for this implementation: RMSNorm upcasts to fp32, SwiGLU, GQA, fused SDPA without the
// T x T score matrix), for a layer run in `mode`. Full keeps only the layer's input; what this
// returns for it is the graph its recompute builds in backward (the same as None's).
int64_t layer_activation_bytes_per_token(const LlamaConfig& c, c10::ScalarType compute_dtype,
                                         Recompute mode = Recompute::None, const AdapterConfig& adapter = {});

// What one decoder layer's backward allocates beyond what its graph saved, at its largest moment,
// for B*T = `tokens` (MemoryPlan::layer_backward): per token the incoming grad and SwiGLU's
// activation grads (with full recompute, also the re-run's graph and output), plus down_proj's
// weight grad (the first one backward makes).
int64_t layer_backward_bytes(const LlamaConfig& c, c10::ScalarType compute_dtype, Recompute mode, int64_t tokens,
                             const AdapterConfig& adapter = {});

// What a plan must fit in. A plan fits when its device total is within kUsableFraction of the
// device's bytes (the rest: the CUDA context, kernels' workspaces, the caching allocator's
// fragmentation) and the host state of every rank on a node within kUsableFraction of the node's.
inline constexpr double kUsableFraction = 0.9;
struct MemoryLimits {
  int64_t device_bytes = 0;
  int64_t host_bytes = -1;      // one node's host memory for offloaded state; < 0: not checked
  bool device_is_host = false;  // CPU ranks: device and offloaded state share the host's memory
};
// Ranks whose host state shares a node's memory: min(world, gpus_per_node).
int ranks_per_node(const MemoryPlanInput& in);
// Bytes of the node's host memory the plan needs (every rank's device state too when device_is_host).
int64_t host_bytes_needed(const MemoryPlan& p, const MemoryPlanInput& in, const MemoryLimits& limits);
bool fits(const MemoryPlan& p, const MemoryPlanInput& in, const MemoryLimits& limits);

// A change of the memory settings that makes a plan fit, and its plan.
struct Alternative {
  Recompute recompute = Recompute::None;
  Offload offload = Offload::None;
  int64_t micro_batch = 1;
  int world = 1;
  MemoryPlanInput input;
  MemoryPlan plan;
};

// The changes of `in` that fit `limits`, keeping the global batch of `global_batch` sequences
// (accumulation makes up for a smaller micro-batch or a larger world): more recompute
// (none -> selective -> full), optimizer offload, a smaller micro-batch, and more ranks (world sizes
// up to `max_world`, or to the global batch when 0, with the global batch a whole number of
// micro-batches x ranks). Nothing is changed back: a setting already more economical is kept.
// Only minimal changes are returned (one that also changes something else is left out), least
// intrusive first: same world before more GPUs, then without offload before with it, then less
// recompute, then the larger micro-batch; that is, new hardware, then host memory and a CPU
// optimizer, then extra compute, then smaller matmuls.
std::vector<Alternative> fitting_alternatives(const MemoryPlanInput& in, int64_t global_batch,
                                              const MemoryLimits& limits, const Hardware& hw = {},
                                              int max_world = 0);

}  // namespace agenttune::parallel
