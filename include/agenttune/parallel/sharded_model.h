#pragma once
// FSDP / ZeRO for the Llama model, built on c10d (LibTorch has no C++ FSDP). The model stays plain
// math; this wraps it from outside.
//
// Units: the embedding, each decoder layer, and the final norm + head. A unit's parameters are
// flattened into two buffers (weight-decayed matrices, undecayed vectors), padded to a multiple of
// the shard group, and each rank keeps its slice as an fp32 master that AdamW updates (the cut is
// ShardLayout's, also for checkpoints resharded to another world size: own_slices).
//
//   full_shard (ZeRO-3)  a unit's parameters are all-gathered in the compute dtype just before its
//                        forward and freed after (reshard_after_forward); backward re-gathers them,
//                        walks the unit's kept graph (or recomputes it when the model checkpoints
//                        it), then reduce-scatters its grads in fp32. The last unit (norm + head)
//                        stays gathered from its forward to its backward, and the embedding's
//                        backward, which reads no weight, gathers nothing.
//   shard_grad_op (ZeRO-2)  full parameters stay resident through the step; grads are
//                        reduce-scattered after backward; updated shards are all-gathered after
//                        the optimizer step.
//   no_shard (DDP)       every rank holds everything; grads are all-reduced.
//   hybrid_shard         full_shard inside groups of `hybrid_group_size` ranks (a node), and the
//                        shard grads all-reduced across the groups (replicas).
// A shard group of one (a single process) keeps every unit resident, as no_shard does: the fp32
// masters are the compute weights in fp32, a bf16 copy is refreshed once per optimizer step
// (dist.single_rank_path resident; per_unit runs full_shard's per-unit path through the backend
// even there, so one GPU exercises the ZeRO-3 path).
//
// Gradients accumulate in fp32 on every path, micro-batch by micro-batch: each unit's backward
// (detail::UnitFunction, resident units too) takes its grads from the unit's own sub-graph and folds
// them at once into an fp32 accumulator: the per-unit strategies reduce-scatter them (fp32) into
// the shard grads; the resident ones add them into a full-size fp32 buffer per group (the shard
// grad itself when a rank holds the whole group: a shard group of one, no_shard), reduced once per
// step by finish_backward. Module parameters never get a .grad. The fused loss hands the head
// weight's grad over in fp32 (a GradSink): autograd would round it to a bf16 weight's dtype.
//
// dist.offload: optimizer (ZeRO-Offload, FSDP2's CPUOffloadPolicy) keeps the fp32 masters, their
// grads and AdamW's moments in host memory (pinned when the device is CUDA): AdamW runs on the CPU.
// The device holds a compute-dtype copy of each shard (what gathers read; in a shard group of one,
// the weights computed on), refreshed by one upload per group after each optimizer step, and the
// fp32 grad accumulators during backward. finish_backward queues each group's final grad to the
// host (non_blocking) and clip_grad_norm takes the norm from the device grads before dropping them;
// the clip factor reaches the host with the step's one sync and before_optimizer_step applies it.
// The arithmetic and its order are unchanged, so losses and checkpoints are bit-identical.
//
// With `prefetch` (the default) communication overlaps compute: the per-unit strategies issue the
// all-gather of the next unit (forward) or of the previous one (backward) before computing the
// current one, so at most two units are gathered at once, and each unit's grad reduce-scatter runs
// while the next unit's backward computes (it lands, in order, after that unit's own reduction is
// issued, or in finish_backward). shard_grad_op / no_shard keep one group's grad reduction in
// flight while finish_backward flattens the next; hybrid_shard issues the replica all-reduces of
// all groups before waiting. The collectives, their order and every sum are the same as without
// prefetch, so the results are bit-identical.
//
// Frozen parameters (LoRA's base: requires_grad false when the model is handed over) form a third
// group per unit, "<unit>.frozen" (and uint8 ones, QLoRA's NF4 records, a fourth, kept as bytes:
// "<unit>.frozen_bytes"), kept in the compute dtype with no fp32 master, no gradient, no
// accumulator and no optimizer state; it is sharded, gathered and freed like the others (on the
// device even with dist.offload: there is nothing of it to offload), and is not among shard_params(),
// layout() or a checkpoint's groups. A unit's backward asks autograd only for its trainable
// parameters' grads (and its input's), so a frozen matmul costs its input grad alone; a unit with no
// trainable parameter still passes its input's grad on (the head under LoRA), and one whose input
// needs no grad either (the embedding) runs as in evaluation, with no backward at all.
// base_fingerprint() identifies the frozen values (what an adapter checkpoint was trained on).
// Adapter dropout draws from the device's default generator (seed_dropout): a unit the model
// recomputes whole (Recompute::Full) restores the state its forward drew from, so the recompute
// drops out exactly what the forward did.
//
// The public surface is a step's: loss_sum (or logits), finish_backward, clip_grad_norm,
// before_optimizer_step, after_optimizer_step, and the shards for AdamW and checkpoints. The
// unit-level steps are private: only the per-unit autograd function (detail::UnitFunction) drives them.
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agenttune/config/scalars.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/shard_layout.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/named_tensors.h"

namespace agenttune::parallel {
enum class ShardStrategy { FullShard, ShardGradOp, NoShard, HybridShard };
}  // namespace agenttune::parallel

namespace agenttune {
// dist.strategy's names: the only table (train config validation, the engine, `agenttune plan`).
template <>
struct EnumNames<parallel::ShardStrategy> {
  static constexpr std::array<std::pair<parallel::ShardStrategy, std::string_view>, 4> values = {
      {{parallel::ShardStrategy::FullShard, "full_shard"},
       {parallel::ShardStrategy::ShardGradOp, "shard_grad_op"},
       {parallel::ShardStrategy::NoShard, "no_shard"},
       {parallel::ShardStrategy::HybridShard, "hybrid_shard"}}};
};
}  // namespace agenttune

namespace agenttune::parallel {
// dist.offload: where the fp32 masters and the optimizer state live. Optimizer keeps them in host
// memory (ZeRO-Offload, FSDP2's CPUOffloadPolicy): the device holds compute-dtype parameters and
// the fp32 gradient of the group in flight, AdamW runs on the host.
enum class Offload { None, Optimizer };
}  // namespace agenttune::parallel

namespace agenttune {
template <>
struct EnumNames<parallel::Offload> {
  static constexpr std::array<std::pair<parallel::Offload, std::string_view>, 2> values = {
      {{parallel::Offload::None, "none"}, {parallel::Offload::Optimizer, "optimizer"}}};
};
}  // namespace agenttune

namespace agenttune::parallel {
// dist.single_rank_path: what a shard group of one does under full_shard / hybrid_shard.
enum class SingleRankPath { Resident, PerUnit };
}  // namespace agenttune::parallel

namespace agenttune {
template <>
struct EnumNames<parallel::SingleRankPath> {
  static constexpr std::array<std::pair<parallel::SingleRankPath, std::string_view>, 2> values = {
      {{parallel::SingleRankPath::Resident, "resident"}, {parallel::SingleRankPath::PerUnit, "per_unit"}}};
};
}  // namespace agenttune

namespace agenttune::parallel {

// A name of EnumNames<ShardStrategy>; anything else throws agenttune::Error listing them.
ShardStrategy parse_shard_strategy(const std::string& s);
std::string shard_strategy_name(ShardStrategy s);

struct ShardOptions {
  ShardStrategy strategy = ShardStrategy::FullShard;
  c10::ScalarType compute_dtype = c10::ScalarType::Float;
  int hybrid_group_size = 0;  // ranks per shard group for hybrid_shard; 0 = LOCAL_WORLD_SIZE
  bool prefetch = true;       // overlap collectives with compute (dist.prefetch)
  // full_shard / hybrid_shard: free a unit's gathered parameters after its forward and gather
  // them again for its backward (dist.reshard_after_forward; FSDP2's choice of the same name).
  // Off keeps them from forward to backward: one all-gather per micro-batch instead of two.
  bool reshard_after_forward = true;
  // A shard group of one (full_shard / hybrid_shard): keep every unit resident, or gather, free and
  // reduce-scatter per unit through the backend as a larger group does (bit-identical results).
  // No effect on larger shard groups (always per unit); no_shard / shard_grad_op refuse per_unit.
  SingleRankPath single_rank_path = SingleRankPath::Resident;
  Offload offload = Offload::None;  // dist.offload
};

// What the engine did, for tests and benchmarks.
struct ShardStats {
  int64_t prefetches = 0;           // unit all-gathers issued before the unit that needs them
  int64_t peak_resident_units = 0;  // most units with gathered (or gathering) parameters at once
  int64_t peak_gathered_bytes = 0;  // most compute-dtype bytes of gathered parameters at once
};

struct FlatParam {
  std::string name;  // HF name
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t numel = 0;
};

// Reads `numel` elements of a parameter's flattened initial values, from `offset`, as fp32 on the
// host: each rank reads only its own shard (from a memory-mapped checkpoint, say) instead of a
// whole model. Without one, the model's own parameters are read.
using WeightSlices = std::function<at::Tensor(const FlatParam& p, int64_t offset, int64_t numel)>;

// The engine's own record of one flat group (ShardedModel keeps them private).
struct FlatGroup {
  std::string name;  // "layers.3.decay"
  size_t unit = 0;
  bool decay = true;
  // Parameters that do not train: `shard` is this rank's slice in the compute dtype on the device
  // (not requires_grad), gathered into `full` like the others; no grad, never offloaded.
  bool frozen = false;
  // A frozen group of uint8 parameters (QLoRA's packed NF4 records): sharded and gathered as the
  // bytes they are, never cast.
  bool bytes = false;
  std::vector<FlatParam> params;
  std::vector<at::Tensor> module_params;  // the model's own parameter tensors, in params order
  ShardLayout layout;  // the group's flat buffer over the shard group
  at::Tensor shard;  // fp32 master slice, requires_grad: what AdamW updates (frozen: see above)
  // dist.offload: optimizer: `shard` lives in host memory; this is its compute-dtype copy on the
  // device, what gathers read (and the resident full buffer in a shard group of one).
  at::Tensor device_shard;
  at::Tensor full;   // gathered compute-dtype buffer while resident
  // shard_grad_op with a shard group > 1: the group's full fp32 grad, accumulated over the step's
  // micro-batches until finish_backward reduce-scatters it (elsewhere the shard grad accumulates).
  at::Tensor grad_acc;
  Pending gathering; // the all-gather filling `full`, while in flight
  bool storage_freed = false;  // `full` resharded after forward: its storage is empty until re-gathered
};

// The one gradient clip. The global L2 norm of `grads` (undefined ones count as zero; per-tensor
// norms in the grads' dtype, fp32 for the engine's shards, combined in fp64; summed over `sum_over`
// when its ranks hold disjoint parts of one gradient) as an fp64 scalar that stays on the device (on `device` when there are no grads): no
// host sync. Scales the grads by torch.nn.utils.clip_grad_norm_'s factor max_norm / (norm + 1e-6)
// when that is below 1 (max_norm <= 0: no clipping). A non-finite norm leaves the grads untouched
// (the step is skipped).
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm, c10::Device device,
                          ProcessGroup* sum_over = nullptr);

// A full (unpadded) fp32 flat buffer of a group, by group name and element count: what a
// checkpoint reassembles from its rank files, at whatever world size wrote them.
using FullGroup = std::function<at::Tensor(const std::string& group, int64_t numel)>;

namespace detail {
struct UnitFunction;
}

class ShardedModel {
 public:
  // `model` must hold the same (fp32) weights on every rank, e.g. loaded from the same checkpoint
  // or initialised with the same seed: each rank keeps its slice. `world` gives the node layout for
  // hybrid_shard.
  // With `weights`, the model may be a skeleton on the meta device (shapes and names only).
  ShardedModel(LlamaForCausalLM model, ProcessGroup& dist, const WorldInfo& world, ShardOptions opts,
               const WeightSlices& weights = {});
  ~ShardedModel();

  // Logits [B, T, V] for a micro-batch, in the compute dtype; backward works through them. Decoding
  // (no grad) passes a KV cache to append to, and `head_rows` (UnitInputs::head_rows; host or
  // device) for logits [N, V] of only those positions.
  at::Tensor logits(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                    KVCache* cache = nullptr, const at::Tensor& head_rows = {});
  // The micro-batch's summed token loss (fp32) without materialising its logits; `trained` as in
  // LlamaForCausalLM::loss_sum. What training and evaluation call.
  at::Tensor loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                      const at::Tensor& targets, int64_t trained = -1);
  // Call once after the step's last backward: reduces grads into the shards where the strategy
  // defers it (shard_grad_op, no_shard) and across replicas (hybrid_shard).
  void finish_backward();
  // clip_grad_norm() over the shard grads: the global grad norm (an fp64 device scalar, no host
  // sync), the grads clipped to max_norm.
  at::Tensor clip_grad_norm(double max_norm);
  // Call between the step's host sync (which reads clip_grad_norm's norm) and the optimizer step:
  // with offload, scales the host grads by the clip factor the device computed (nothing otherwise).
  void before_optimizer_step();
  // Call after the optimizer updated the shards: re-gathers resident full parameters.
  void after_optimizer_step();

  // The fp32 master shards of the trainable groups, named by group, with their decay flags (for AdamW).
  std::vector<std::pair<std::string, at::Tensor>> shard_params() const;
  std::vector<bool> shard_decay() const;
  // What this rank keeps of each frozen group, in the compute dtype (uint8 records as bytes): its
  // slice, or, where a resident strategy holds the whole group anyway (shard_grad_op), the gathered
  // group.
  std::vector<std::pair<std::string, at::Tensor>> frozen_shards() const;
  // The frozen base's identity (parallel/base_fingerprint.h): 16 hex digits, the same at every
  // world size and strategy; "" when nothing is frozen. Computed once, at construction.
  const std::string& base_fingerprint() const { return base_fingerprint_; }
  // Adapter dropout draws from the device's default generator; this seeds it (nothing when no
  // adapter drops out). The trainer seeds it per step and rank, so a resumed, resharded or rolled
  // back run draws the masks an uninterrupted one would, with no generator state to checkpoint.
  void seed_dropout(uint64_t seed);

  // What a checkpoint needs to reassemble full (trainable) groups at any world size.
  nlohmann::json layout() const;
  // This rank's slice of each group's full buffer, by group name, in shard_params() order: how
  // a checkpoint's parameters and optimizer moments are resharded to this world.
  NamedTensors own_slices(const FullGroup& full_of) const;
  // Sets this rank's shards from full buffers (own_slices) and re-gathers what stays resident.
  void load_full_groups(const FullGroup& full_of);
  c10::ScalarType compute_dtype() const { return opts_.compute_dtype; }
  LlamaForCausalLM& model() { return model_; }
  bool offloaded() const { return opts_.offload == Offload::Optimizer; }
  const ShardStats& stats() const { return stats_; }

 private:
  // The per-unit autograd function drives the unit-level steps below.
  friend struct detail::UnitFunction;
  // A group's grad reduction in flight; `assign` replaces the shard grad (the resident strategies
  // reduce once per step), otherwise it accumulates (per-unit strategies, once per micro-batch).
  struct GradInFlight {
    size_t group = 0;
    bool assign = false;
    Pending pending;
    at::Tensor reduced;
  };

  int shard_rank() const;
  // Offload, at the end of finish_backward: queues the copy of each group's final fp32 device grad
  // into host memory as the shard's .grad, keeping the device grads for clip_grad_norm's norm.
  void offload_grads();
  // Offload: refreshes every group's device compute-dtype copy from its host master.
  void refresh_device_shards();
  int shard_world() const;
  void build_groups(const WeightSlices& weights);
  // The base fingerprint of the frozen groups from this rank's slices of them (fp32 or bytes, as
  // read), combined over the shard group.
  void fingerprint_base(const std::vector<std::pair<size_t, at::Tensor>>& frozen_slices);
  // This rank's slice of a group's padded flat buffer, in fp32 (a bytes group: uint8) on the host.
  at::Tensor read_slice(const FlatGroup& g, const WeightSlices& weights) const;
  bool per_unit() const;
  ProcessGroup& shard_dist();
  void issue_gather(FlatGroup& g);
  void gather_groups(const std::vector<size_t>& groups);
  void note_resident();
  void issue_grad_reduce(size_t group, const at::Tensor& flat_grad, bool assign);
  // Waits for the `n` oldest grad reductions, in issue order, and adds them to the shard grads.
  void land_grads(size_t n);
  void land_all_grads() { land_grads(grads_in_flight_.size()); }
  at::Tensor flatten_grads(const FlatGroup& g, const std::vector<at::Tensor>& grads) const;
  // The resident strategies' fp32 accumulator of a group: the shard grad where this rank holds the
  // whole group, else grad_acc. Undefined before the step's first backward reaches the group.
  at::Tensor& grad_accumulator(FlatGroup& g);
  // Adds one micro-batch's grads of a group (params order, any float dtype, undefined = zero) into
  // its accumulator: copied into it by the step's first micro-batch, added after.
  void fold_grads(FlatGroup& g, const std::vector<at::Tensor>& grads);
  // Undefined targets: the head returns logits (of `head_rows` only, when defined).
  at::Tensor run(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                 const at::Tensor& targets, int64_t trained, KVCache* cache = nullptr,
                 const at::Tensor& head_rows = {});

  // Unit-level steps. gather_unit waits for a prefetched unit; prefetch_unit issues a unit's
  // all-gather without waiting (nothing when prefetch is off, the unit does not exist or it is
  // gathered already).
  void gather_unit(size_t unit);
  void prefetch_unit(int64_t unit);
  void free_unit(size_t unit);
  at::Tensor run_unit(size_t unit, const at::Tensor& x);
  // Whether a unit's forward needs UnitFunction (a backward): it has a trainable parameter or its
  // input requires grad.
  bool unit_trains(size_t unit, const at::Tensor& x) const;
  // After a unit's forward whose graph is kept: frees its gathered parameters' memory (their
  // storage object stays, for the graph's saved views) unless reshard_after_forward is off.
  void release_after_forward(size_t unit);
  // One micro-batch's grads of a unit's parameters (unit_module_params order): reduce-scattered
  // (per-unit strategies) or folded into the accumulators (resident ones).
  void accumulate_unit_grads(size_t unit, std::vector<at::Tensor> full_grads);
  // A unit's trainable module parameters, in its groups' order: what its backward asks grads for.
  std::vector<at::Tensor> unit_module_params(size_t unit) const;
  // Every group of a unit (what is gathered and freed), or only its trainable ones.
  std::vector<size_t> unit_groups(size_t unit, bool trainable_only = false) const;

  LlamaForCausalLM model_;
  ProcessGroup& dist_;
  ShardOptions opts_;
  std::unique_ptr<ProcessGroup> shard_group_, replica_group_;  // hybrid_shard only
  std::vector<FlatGroup> groups_;
  std::vector<size_t> trainable_;  // indices of the groups that are not frozen, in order
  std::string base_fingerprint_;
  // Stands in for a unit's shards as UnitFunction's grad-requiring input when the unit has no
  // trainable parameter (autograd records a node only for an input that requires grad).
  at::Tensor anchor_;
  // Adapter dropout's generator (the device's default one), whose state a recomputed unit restores;
  // undefined without dropout.
  at::Generator dropout_rng_;
  std::vector<GradInFlight> grads_in_flight_;
  // Offload: the groups' final device grads until clip_grad_norm reads them, and the clip factor
  // (host copy, valid after the step's sync) that before_optimizer_step applies to the host grads.
  std::vector<at::Tensor> offloaded_device_grads_;
  at::Tensor host_clip_factor_;
  ShardStats stats_;
  at::Tensor head_weight_grad_;  // the fused loss's fp32 head weight grad, until its unit's backward takes it
  size_t num_units_ = 0;
  // Per forward: what the units need besides their input. It outlives the call: a checkpointed
  // unit's backward recomputes with it.
  UnitInputs in_;
};

}  // namespace agenttune::parallel
