#pragma once
// FSDP / ZeRO for the Llama model, built on c10d (LibTorch has no C++ FSDP). The model stays plain
// math; this wraps it from outside.
//
// Units: the embedding, each decoder layer, and the final norm + head. A unit's parameters are
// flattened into two buffers (weight-decayed matrices, undecayed vectors), padded to a multiple of
// the shard group, and each rank keeps its slice as an fp32 master that AdamW updates.
//
//   full_shard (ZeRO-3)  a unit's parameters are all-gathered in the compute dtype just before its
//                        forward and freed after (reshard_after_forward); backward re-gathers them,
//                        walks the unit's kept graph (or recomputes it when the model checkpoints
//                        it), then reduce-scatters its grads in fp32.
//   shard_grad_op (ZeRO-2)  full parameters stay resident through the step; grads are
//                        reduce-scattered after backward; updated shards are all-gathered after
//                        the optimizer step.
//   no_shard (DDP)       every rank holds everything; grads are all-reduced.
//   hybrid_shard         full_shard inside groups of `hybrid_group_size` ranks (a node), and the
//                        shard grads all-reduced across the groups (replicas).
// A shard group of one (a single process) keeps every unit resident, as no_shard does: the fp32
// masters are the compute weights in fp32, a bf16 copy is refreshed once per optimizer step.
//
// With `prefetch` (the default) communication overlaps compute: the per-unit strategies issue the
// all-gather of the next unit (forward) or of the previous one (backward) before computing the
// current one, so at most two units are gathered at once, and each unit's grad reduce-scatter runs
// while the next unit's backward computes (it lands, in order, after that unit's own reduction is
// issued, or in finish_backward). shard_grad_op / no_shard keep one group's grad reduction in
// flight while finish_backward flattens the next; hybrid_shard issues the replica all-reduces of
// all groups before waiting. The collectives, their order and every sum are the same as without
// prefetch, so the results are bit-identical.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agenttune/config/scalars.h"
#include "agenttune/dist/dist.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/named_tensors.h"

namespace agenttune::dist {
enum class ShardStrategy { FullShard, ShardGradOp, NoShard, HybridShard };
}  // namespace agenttune::dist

namespace agenttune {
// dist.strategy's names: the only table (train config validation, the engine, `agenttune plan`).
template <>
struct EnumNames<dist::ShardStrategy> {
  static constexpr std::array<std::pair<dist::ShardStrategy, std::string_view>, 4> values = {
      {{dist::ShardStrategy::FullShard, "full_shard"},
       {dist::ShardStrategy::ShardGradOp, "shard_grad_op"},
       {dist::ShardStrategy::NoShard, "no_shard"},
       {dist::ShardStrategy::HybridShard, "hybrid_shard"}}};
};
}  // namespace agenttune

namespace agenttune::dist {

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

struct FlatGroup {
  std::string name;  // "layers.3.decay"
  size_t unit = 0;
  bool decay = true;
  std::vector<FlatParam> params;
  std::vector<at::Tensor> module_params;  // the model's own parameter tensors, in params order
  int64_t numel = 0;
  int64_t padded = 0;
  at::Tensor shard;  // fp32 master slice, requires_grad: what AdamW updates
  at::Tensor full;   // gathered compute-dtype buffer while resident
  Pending gathering; // the all-gather filling `full`, while in flight
  bool storage_freed = false;  // `full` resharded after forward: its storage is empty until re-gathered
};

class ShardedModel {
 public:
  // `model` must hold the same (fp32) weights on every rank, e.g. loaded from the same checkpoint
  // or initialised with the same seed: each rank keeps its slice. `world` gives the node layout for
  // hybrid_shard.
  // With `weights`, the model may be a skeleton on the meta device (shapes and names only).
  ShardedModel(LlamaForCausalLM model, Dist& dist, const WorldInfo& world, ShardOptions opts,
               const WeightSlices& weights = {});
  ~ShardedModel();

  // Logits for a micro-batch, in the compute dtype; backward works through them.
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec);
  // The micro-batch's summed token loss (fp32) without materialising its logits; `trained` as in
  // LlamaForCausalLM::loss_sum. What training and evaluation call.
  at::Tensor loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                      const at::Tensor& targets, int64_t trained = -1);
  // Call once after the step's last backward: reduces grads into the shards where the strategy
  // defers it (shard_grad_op, no_shard) and across replicas (hybrid_shard).
  void finish_backward();
  // The global grad norm over the shards; clips them to max_norm (<= 0: no clipping). Non-finite
  // norms are returned without touching the grads.
  double clip_grad_norm(double max_norm);
  // The same without a host sync: the norm stays a (fp64) scalar on the device.
  at::Tensor clip_grad_norm_on_device(double max_norm);
  // Call after the optimizer updated the shards: re-gathers resident full parameters.
  void after_optimizer_step();

  // The fp32 master shards, named by group, with their decay flags (for AdamW).
  std::vector<std::pair<std::string, at::Tensor>> shard_params() const;
  std::vector<bool> shard_decay() const;

  // What a checkpoint needs to reassemble full groups at any world size.
  nlohmann::json layout() const;
  // Sets this rank's slices from full (unpadded) fp32 group buffers, by group name.
  void load_full_groups(const std::function<at::Tensor(const std::string& group, int64_t numel)>& full_of);
  // The full fp32 parameters of one group (all-gathered; every rank gets them).
  NamedTensors gather_group_params(size_t group);
  size_t num_groups() const { return groups_.size(); }
  const FlatGroup& group(size_t i) const { return groups_[i]; }
  int shard_rank() const;
  c10::ScalarType compute_dtype() const { return opts_.compute_dtype; }
  int shard_world() const;
  LlamaForCausalLM& model() { return model_; }
  const ShardStats& stats() const { return stats_; }

  // Used by the per-unit autograd function. gather_unit waits for a prefetched unit; prefetch_unit
  // issues a unit's all-gather without waiting (nothing when prefetch is off, the unit does not
  // exist or it is gathered already).
  void gather_unit(size_t unit);
  void prefetch_unit(int64_t unit);
  void free_unit(size_t unit);
  at::Tensor run_unit(size_t unit, const at::Tensor& x);
  // After a unit's forward whose graph is kept: frees its gathered parameters' memory (their
  // storage object stays, for the graph's saved views) unless reshard_after_forward is off.
  void release_after_forward(size_t unit);
  void reduce_unit_grads(size_t unit, const std::vector<at::Tensor>& full_grads);
  std::vector<at::Tensor> unit_module_params(size_t unit) const;
  std::vector<size_t> unit_groups(size_t unit) const;

 private:
  // A group's grad reduction in flight; `assign` replaces the shard grad (the resident strategies
  // reduce once per step), otherwise it accumulates (per-unit strategies, once per micro-batch).
  struct GradInFlight {
    size_t group = 0;
    bool assign = false;
    Pending pending;
    at::Tensor reduced;
  };

  void build_groups(const WeightSlices& weights);
  // This rank's [lo, lo + len) of a group's padded flat buffer, in fp32 on the host.
  at::Tensor read_slice(const FlatGroup& g, int64_t lo, int64_t len, const WeightSlices& weights) const;
  bool per_unit() const;
  Dist& shard_dist();
  void issue_gather(FlatGroup& g);
  void gather_groups(const std::vector<size_t>& groups);
  void note_resident();
  void issue_grad_reduce(size_t group, const at::Tensor& flat_grad, bool assign);
  // Waits for the `n` oldest grad reductions, in issue order, and adds them to the shard grads.
  void land_grads(size_t n);
  void land_all_grads() { land_grads(grads_in_flight_.size()); }
  at::Tensor flatten_grads(const FlatGroup& g, const std::vector<at::Tensor>& grads) const;

  LlamaForCausalLM model_;
  Dist& dist_;
  ShardOptions opts_;
  std::unique_ptr<Dist> shard_group_, replica_group_;  // hybrid_shard only
  std::vector<FlatGroup> groups_;
  std::vector<GradInFlight> grads_in_flight_;
  ShardStats stats_;
  size_t num_units_ = 0;
  // The units of one forward through the model's own loop.
  at::Tensor run(const at::Tensor& tokens);
  // Per forward: what the units need besides their input.
  UnitInputs in_;
};

}  // namespace agenttune::dist
