#include "agenttune/parallel/sharded_model.h"

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "agenttune/parallel/base_fingerprint.h"
#include "agenttune/util/error.h"

namespace agenttune::parallel {

namespace {

// Frees a tensor's memory but keeps its storage object: autograd's saved views of it stay valid
// and see the data again once alloc_storage() refills the same storage (FSDP's reshard).
void free_storage(const at::Tensor& t) {
  auto* s = t.storage().unsafeGetStorageImpl();
  s->set_data_ptr_noswap(at::DataPtr(nullptr, s->device()));
  s->set_nbytes(0);
}

// Host memory for the offloaded state: pinned (page-locked) when the device is CUDA, so copies to
// and from it run asynchronously; plain elsewhere (a CPU-only build, the fake device, a CPU run),
// where there is nothing to overlap. The one place that decides.
at::TensorOptions host_memory(c10::Device device, c10::ScalarType dtype) {
  return at::TensorOptions().dtype(dtype).device(at::kCPU).pinned_memory(device.is_cuda());
}

// The global L2 norm of the defined `grads`, as clip_grad_norm() describes it.
at::Tensor global_grad_norm(const std::vector<at::Tensor>& all_grads, c10::Device device, ProcessGroup* sum_over) {
  std::vector<at::Tensor> grads;
  for (const auto& g : all_grads)
    if (g.defined()) grads.push_back(g);
  // Per tensor in fp32 (one fused pass over the grads, as torch's clip_grad_norm_), combined in fp64.
  at::Tensor sq = grads.empty() ? at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device))
                                : at::stack(at::_foreach_norm(grads, 2)).to(at::kDouble).pow(2).sum();
  if (sum_over) sum_over->all_reduce(sq, Reduce::Sum, "grad_norm");
  return sq.sqrt();
}

// torch.nn.utils.clip_grad_norm_'s factor max_norm / (norm + 1e-6), at most 1. Scaling by exactly 1
// changes no bit, so the grads are always multiplied: deciding on the host whether to clip would
// cost a sync. A non-finite norm gives 1: the grads stay as they are (the step is skipped).
at::Tensor clip_factor(const at::Tensor& norm, double max_norm) {
  return at::where(at::isfinite(norm), (max_norm / (norm + 1e-6)).clamp_max(1.0), at::ones_like(norm));
}

// A generator's state (torch.get_rng_state and set_rng_state take its lock the same way).
at::Tensor generator_state(at::Generator& gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_generator_state(at::Generator& gen, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// Whether any adapter drops out its input (model/lora.h: torch.nn.Dropout's draw, from the default
// generator of the activations' device).
bool has_adapter_dropout(LlamaForCausalLMImpl& m) {
  for (const auto& module : m.modules())
    if (const auto* p = module->as<ProjectionImpl>(); p && p->has_adapter() && p->lora_dropout > 0) return true;
  return false;
}

void alloc_storage(const at::Tensor& t) {
  auto* s = t.storage().unsafeGetStorageImpl();
  const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
  s->set_data_ptr_noswap(s->allocator()->allocate(bytes));
  s->set_nbytes(bytes);
}

}  // namespace

namespace detail {

// The entry of a unit's kept sub-graph: an alias of the unit's input behind a node that saves
// nothing, where backward takes the input's gradient. A fresh leaf would do the same, but its
// AccumulateGrad node holds the tensor, and with it a [B, T, D] input that nothing else keeps.
// `anchor` (any tensor that requires grad) only makes the alias require grad.
struct UnitEntry : public torch::autograd::Function<UnitEntry> {
  static at::Tensor forward(torch::autograd::AutogradContext*, at::Tensor x, at::Tensor anchor) {
    return x.view_as(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    return {at::Tensor(), at::Tensor()};
  }
};

// What backward needs of a kept sub-graph: where it starts (the output's node) and where the
// input's gradient is taken. Edges hold graph nodes, not the tensors' data.
struct KeptGraph : torch::CustomClassHolder {
  torch::autograd::Edge out, in;
};

// The grads of `params` (undefined where the graph does not reach) and, when `in` is valid, first
// the input's: torch::autograd::grad over edges instead of tensors.
torch::autograd::variable_list grads_at(const torch::autograd::Edge& out, const at::Tensor& grad_out,
                                        const torch::autograd::Edge& in, const std::vector<at::Tensor>& params) {
  torch::autograd::edge_list outputs;
  if (in.is_valid()) outputs.push_back(in);
  for (const auto& p : params) outputs.push_back(torch::autograd::impl::gradient_edge(p));
  return torch::autograd::Engine::get_default_engine().execute({out}, {grad_out}, /*keep_graph=*/false,
                                                               /*create_graph=*/false, /*accumulate_grad=*/false,
                                                               outputs);
}

// One unit of a training forward, on every path. Forward gathers its parameters (per-unit
// strategies; resident ones hold them already), runs it and frees them (or keeps them for backward
// when dist.reshard_after_forward is off). Backward re-gathers them and either walks the graph the
// forward kept, or, when the model checkpoints the unit, recomputes it first; then the unit's grads
// go to the engine's fp32 accumulation (accumulate_unit_grads), never through autograd: it would
// cast them to the parameters' compute dtype.
struct UnitFunction : public torch::autograd::Function<UnitFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::Tensor x, at::Tensor shard0,
                            at::Tensor shard1, int64_t unit, int64_t owner) {
    auto* self = reinterpret_cast<ShardedModel*>(owner);
    const auto u = static_cast<size_t>(unit);
    ctx->saved_data["unit"] = unit;
    ctx->saved_data["owner"] = owner;
    self->gather_unit(u);
    self->prefetch_unit(unit + 1);  // its all-gather runs while this unit computes
    if (self->model()->checkpointed(u)) {
      ctx->save_for_backward({x});
      // Its recompute in backward must drop out what this forward drops out.
      if (self->dropout_rng_.defined()) ctx->saved_data["rng"] = generator_state(self->dropout_rng_);
      at::Tensor out;
      {
        at::NoGradGuard ng;
        out = self->run_unit(u, x);
      }
      self->free_unit(u);
      return out;
    }
    // Keep this unit's graph (a sub-graph from its own entry, so the outer graph holds only this
    // node); backward walks it with the parameters gathered again.
    auto kept = c10::make_intrusive<KeptGraph>();
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      at::Tensor xin = x;
      if (x.requires_grad()) {
        xin = UnitEntry::apply(x.detach(), shard0);
        kept->in = torch::autograd::impl::gradient_edge(xin);
      }
      out = self->run_unit(u, xin);
    }
    kept->out = torch::autograd::impl::gradient_edge(out);
    ctx->saved_data["kept"] = at::IValue::make_capsule(kept);
    self->release_after_forward(u);
    return out.detach();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* self = reinterpret_cast<ShardedModel*>(ctx->saved_data["owner"].toInt());
    auto unit = static_cast<size_t>(ctx->saved_data["unit"].toInt());
    // The embedding's backward scatters grad rows by token id and never reads its weight: a kept
    // embedding graph is walked without gathering it again (nor prefetching it).
    const bool kept = ctx->saved_data.count("kept") > 0;
    if (unit != 0 || !kept) self->gather_unit(unit);
    if (unit != 1) self->prefetch_unit(static_cast<int64_t>(unit) - 1);  // backward walks the units in reverse
    auto params = self->unit_module_params(unit);
    torch::autograd::variable_list grads;
    bool input_grad = false;
    if (kept) {
      auto graph = c10::static_intrusive_pointer_cast<KeptGraph>(ctx->saved_data["kept"].toCapsule());
      ctx->saved_data.erase("kept");
      input_grad = graph->in.is_valid();
      grads = grads_at(graph->out, grad_out[0], graph->in, params);
    } else {
      at::Tensor x = ctx->get_saved_variables()[0];
      // An input that needs no grad (the embedding's output under LoRA) gets none computed.
      at::Tensor xin = x.is_floating_point() && ctx->needs_input_grad(0) ? x.detach().requires_grad_(true) : x.detach();
      at::Tensor out, rng_now;
      if (ctx->saved_data.count("rng")) {
        rng_now = generator_state(self->dropout_rng_);
        set_generator_state(self->dropout_rng_, ctx->saved_data["rng"].toTensor());
      }
      {
        at::AutoGradMode enable(true);
        out = self->run_unit(unit, xin);
      }
      if (rng_now.defined()) set_generator_state(self->dropout_rng_, rng_now);
      input_grad = xin.requires_grad();
      grads = grads_at(torch::autograd::impl::gradient_edge(out), grad_out[0],
                       input_grad ? torch::autograd::impl::gradient_edge(xin) : torch::autograd::Edge(), params);
    }
    at::Tensor grad_x;
    if (input_grad) grad_x = grads[0], grads.erase(grads.begin());
    self->accumulate_unit_grads(unit, std::move(grads));
    self->free_unit(unit);
    // accumulate_unit_grads puts the grads into the shards' fp32 grads itself (summed over ranks
    // first), so the shard inputs get no gradient from autograd: it would add them twice.
    torch::autograd::variable_list result{grad_x, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    return result;
  }
};

}  // namespace detail

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& all_grads, double max_norm, c10::Device device,
                          ProcessGroup* sum_over) {
  at::NoGradGuard ng;
  at::Tensor norm = global_grad_norm(all_grads, device, sum_over);
  if (max_norm <= 0) return norm;
  auto factor = clip_factor(norm, max_norm);
  for (const auto& g : all_grads)
    if (g.defined()) g.mul_(factor);
  return norm;
}

ShardStrategy parse_shard_strategy(const std::string& s) {
  if (auto v = parse_enum<ShardStrategy>(s)) return *v;
  fail("dist.strategy '{}' is not one of: {}", s, enum_name_list<ShardStrategy>());
}

std::string shard_strategy_name(ShardStrategy s) { return enum_name(s); }

ShardedModel::ShardedModel(LlamaForCausalLM model, ProcessGroup& dist, const WorldInfo& world, ShardOptions opts,
                           const WeightSlices& weights)
    : model_(std::move(model)), dist_(dist), opts_(opts) {
  if (opts_.strategy == ShardStrategy::HybridShard) {
    int g = opts_.hybrid_group_size > 0 ? opts_.hybrid_group_size : world.local_world_size;
    if (g <= 0 || dist_.world_size() % g != 0)
      fail("dist.hybrid_group_size {} does not divide the world size {}", g, dist_.world_size());
    int shard_id = dist_.rank() / g, replica_id = dist_.rank() % g;
    // Sub-groups share the job's store under their own prefixes.
    auto store = c10::make_intrusive<c10d::PrefixStore>("shard" + std::to_string(shard_id),
                                                        c10::intrusive_ptr<c10d::Store>::reclaim_copy(&dist_.store()));
    const ProcessGroupOptions& o = dist_.options();  // the job's own choices: backend, timeouts
    shard_group_ = std::make_unique<ProcessGroup>(store, dist_.rank() % g, g, dist_.device(), o);
    auto rstore = c10::make_intrusive<c10d::PrefixStore>("replica" + std::to_string(replica_id),
                                                         c10::intrusive_ptr<c10d::Store>::reclaim_copy(&dist_.store()));
    replica_group_ = std::make_unique<ProcessGroup>(rstore, dist_.rank() / g, dist_.world_size() / g, dist_.device(), o);
  }
  if (opts_.single_rank_path == SingleRankPath::PerUnit &&
      (opts_.strategy == ShardStrategy::NoShard || opts_.strategy == ShardStrategy::ShardGradOp))
    fail("dist.single_rank_path per_unit runs full_shard's per-unit path in a shard group of one; {} keeps full "
         "parameters resident by design (use full_shard or hybrid_shard, or single_rank_path: resident)",
         shard_strategy_name(opts_.strategy));
  build_groups(weights);
  if (has_adapter_dropout(*model_)) dropout_rng_ = at::globalContext().defaultGenerator(dist_.device());
}

ShardedModel::~ShardedModel() = default;

int ShardedModel::shard_world() const {
  switch (opts_.strategy) {
    case ShardStrategy::NoShard: return 1;
    case ShardStrategy::HybridShard: return shard_group_->world_size();
    default: return dist_.world_size();
  }
}

int ShardedModel::shard_rank() const {
  switch (opts_.strategy) {
    case ShardStrategy::NoShard: return 0;
    case ShardStrategy::HybridShard: return shard_group_->rank();
    default: return dist_.rank();
  }
}

at::Tensor ShardedModel::read_slice(const FlatGroup& g, const WeightSlices& weights) const {
  const int64_t lo = g.layout.offset(shard_rank()), len = g.layout.shard_numel();
  const auto dtype = g.bytes ? at::kByte : at::kFloat;  // bytes are records, never converted
  std::vector<at::Tensor> parts;
  int64_t have = 0;
  for (size_t k = 0; k < g.params.size(); ++k) {
    const auto& fp = g.params[k];
    const int64_t a = std::max(lo, fp.offset), b = std::min(lo + len, fp.offset + fp.numel);
    if (a >= b) continue;
    at::Tensor part = weights ? weights(fp, a - fp.offset, b - a)
                              : g.module_params[k].detach().reshape({-1}).narrow(0, a - fp.offset, b - a);
    if (part.numel() != b - a)
      fail("initial weights of '{}': {} elements read where {} were asked for", fp.name, part.numel(), b - a);
    parts.push_back(part.to(at::kCPU, dtype).reshape({-1}));
    have += b - a;
  }
  if (have < len) parts.push_back(at::zeros({len - have}, dtype));  // the group's padding
  return at::cat(parts);
}

void ShardedModel::build_groups(const WeightSlices& weights) {
  const std::vector<ModelUnit> units = model_units(*model_);
  num_units_ = units.size();

  at::NoGradGuard ng;
  enum class Kind { Decay, NoDecay, Frozen, FrozenBytes };
  std::vector<std::pair<size_t, at::Tensor>> frozen_slices;
  for (size_t u = 0; u < units.size(); ++u) {
    for (Kind kind : {Kind::Decay, Kind::NoDecay, Kind::Frozen, Kind::FrozenBytes}) {
      FlatGroup g;
      g.unit = u;
      g.decay = kind == Kind::Decay;
      g.frozen = kind == Kind::Frozen || kind == Kind::FrozenBytes;
      g.bytes = kind == Kind::FrozenBytes;
      g.name = units[u].name +
               (g.bytes ? kFrozenBytesGroup : g.frozen ? kFrozenGroup : g.decay ? ".decay" : ".no_decay");
      int64_t numel = 0;
      for (auto& [name, p] : units[u].params) {
        const Kind of = p.scalar_type() == at::kByte ? Kind::FrozenBytes
                        : !p.requires_grad()         ? Kind::Frozen
                        : p.dim() >= 2               ? Kind::Decay
                                                     : Kind::NoDecay;
        if (of != kind) continue;
        g.params.push_back({name, p.sizes().vec(), numel, p.numel()});
        g.module_params.push_back(p);
        numel += p.numel();
      }
      if (g.params.empty()) continue;
      g.layout = ShardLayout(numel, shard_world());
      // Only this rank's slice is read and reaches the device (or, offloaded, host memory); the
      // model's own storage goes below.
      at::Tensor master = read_slice(g, weights);
      if (g.frozen) {
        g.shard = master.to(dist_.device(), g.bytes ? at::kByte : opts_.compute_dtype);
        frozen_slices.emplace_back(groups_.size(), std::move(master));
      } else {
        g.shard = (offloaded() ? at::empty(master.sizes(), host_memory(dist_.device(), at::kFloat)).copy_(master)
                               : master.to(dist_.device()))
                      .requires_grad_(true);
        trainable_.push_back(groups_.size());
      }
      groups_.push_back(std::move(g));
    }
  }
  if (!frozen_slices.empty()) {
    fingerprint_base(frozen_slices);
    anchor_ = at::empty({0}, at::TensorOptions().dtype(at::kFloat).device(dist_.device())).requires_grad_(true);
  }
  frozen_slices.clear();
  if (offloaded()) refresh_device_shards();
  // The model's own storage is released: from here on its parameters are views of gathered
  // buffers (resident for shard_grad_op / no_shard, per unit for full and hybrid sharding).
  for (size_t u = 0; u < num_units_; ++u) free_unit(u);
  if (!per_unit())
    for (size_t u = 0; u < num_units_; ++u) gather_unit(u);
}

void ShardedModel::fingerprint_base(const std::vector<std::pair<size_t, at::Tensor>>& frozen_slices) {
  uint64_t sum = 0;
  for (const auto& [gi, slice] : frozen_slices) {
    const auto& g = groups_[gi];
    sum += fingerprint_slice(slice, g.layout.offset(shard_rank()), g.layout.numel(), g.name);
  }
  if (shard_world() > 1) {
    // Every rank's partial sum (int64 bits) on the device, added on the host: sums modulo 2^64.
    auto mine = at::full({1}, static_cast<int64_t>(sum), at::TensorOptions().dtype(at::kLong).device(dist_.device()));
    auto all = at::empty({shard_world()}, mine.options());
    shard_dist().all_gather_into_tensor(all, mine, "base fingerprint");
    auto host = all.cpu();
    sum = 0;
    for (int64_t r = 0; r < host.numel(); ++r) sum += static_cast<uint64_t>(host.data_ptr<int64_t>()[r]);
  }
  base_fingerprint_ = fingerprint_hex(sum);
}

void ShardedModel::seed_dropout(uint64_t seed) {
  if (!dropout_rng_.defined()) return;
  std::lock_guard<std::mutex> lock(dropout_rng_.mutex());
  dropout_rng_.set_current_seed(seed);
}

std::vector<size_t> ShardedModel::unit_groups(size_t unit, bool trainable_only) const {
  std::vector<size_t> out;
  auto take = [&](size_t of) {
    for (size_t i = 0; i < groups_.size(); ++i)
      if (groups_[i].unit == of && !(trainable_only && groups_[i].frozen)) out.push_back(i);
  };
  take(unit);
  // A tied head computes with the embedding's one parameter, which lives in the embedding's groups
  // only (one master, one grad, one optimizer state): the head unit gathers, frees and takes grads
  // for them as for its own, so the weight's grad is the sum of both uses (the head's folded or
  // reduced first, the embedding's added in its own backward). It is gathered again for the head
  // rather than kept from the first unit: at a 128K vocabulary the table is the model's largest
  // buffer, and keeping it gathered from the embedding's forward to the head's backward would hold
  // it beside every layer's gathered parameters and activations.
  if (model_->config().tie_word_embeddings && unit + 1 == num_units_ && unit != 0) take(0);
  return out;
}

std::vector<at::Tensor> ShardedModel::unit_module_params(size_t unit) const {
  std::vector<at::Tensor> out;
  for (size_t gi : unit_groups(unit, /*trainable_only=*/true))
    for (const auto& p : groups_[gi].module_params) out.push_back(p);
  return out;
}

bool ShardedModel::unit_trains(size_t unit, const at::Tensor& x) const {
  return x.requires_grad() || !unit_groups(unit, /*trainable_only=*/true).empty();
}

bool ShardedModel::per_unit() const {
  // A shard group of one holds every parameter anyway: gathering per unit would only copy, unless
  // asked for (the ZeRO-3 path on one GPU, with its real collectives and allocator traffic).
  return (opts_.strategy == ShardStrategy::FullShard || opts_.strategy == ShardStrategy::HybridShard) &&
         (shard_world() > 1 || opts_.single_rank_path == SingleRankPath::PerUnit);
}

ProcessGroup& ShardedModel::shard_dist() { return opts_.strategy == ShardStrategy::HybridShard ? *shard_group_ : dist_; }

// Allocates the group's compute-dtype buffer, points the module's parameters at it and starts
// filling it; the views must not be read before `gathering` is waited on.
void ShardedModel::issue_gather(FlatGroup& g) {
  at::NoGradGuard ng;
  // In a shard group of one the fp32 master is the whole group: in fp32 the module computes on
  // it directly (no copy at all), in bf16 on a cast refreshed once per optimizer step.
  // Offloaded, the device copy is the source (in a shard group of one, the computed-on buffer).
  // A frozen shard is kept in the compute dtype on the device.
  auto local = g.frozen ? g.shard : offloaded() ? g.device_shard : g.shard.detach().to(opts_.compute_dtype);
  if (g.full.defined() && g.storage_freed) {  // resharded after forward: refill the same storage
    alloc_storage(g.full);
    g.storage_freed = false;
    g.gathering = shard_dist().all_gather_into_tensor_async(g.full, local, g.name);
    return;
  }
  if (shard_world() == 1 && !per_unit()) {
    g.full = local;
  } else {
    g.full = at::empty({g.layout.padded()}, local.options());
    g.gathering = shard_dist().all_gather_into_tensor_async(g.full, local, g.name);
  }
  for (size_t k = 0; k < g.params.size(); ++k)
    g.module_params[k].set_data(g.full.narrow(0, g.params[k].offset, g.params[k].numel).view(g.params[k].shape));
}

// Re-gathers the groups whose buffers are not resident (or are still being gathered) and waits.
// Without prefetch each group is waited on before the next is issued, as a synchronous gather.
void ShardedModel::gather_groups(const std::vector<size_t>& groups) {
  for (size_t gi : groups) {
    auto& g = groups_[gi];
    if (!g.full.defined() || g.storage_freed) issue_gather(g);
    if (!opts_.prefetch) g.gathering.wait();
  }
  note_resident();
  for (size_t gi : groups) {
    auto& g = groups_[gi];
    g.gathering.wait();
    // A resident frozen group is never gathered again (nothing updates it): the full buffer is all
    // it needs to keep.
    if (g.frozen && !per_unit() && !g.full.is_same(g.shard)) g.shard = at::Tensor();
  }
}

void ShardedModel::gather_unit(size_t unit) { gather_groups(unit_groups(unit)); }

void ShardedModel::prefetch_unit(int64_t unit) {
  if (!opts_.prefetch || !per_unit() || unit < 0 || unit >= static_cast<int64_t>(num_units_)) return;
  bool issued = false;
  for (size_t gi : unit_groups(static_cast<size_t>(unit))) {
    if (groups_[gi].full.defined() && !groups_[gi].storage_freed) continue;
    issue_gather(groups_[gi]);
    issued = true;
  }
  if (!issued) return;
  ++stats_.prefetches;
  note_resident();
}

void ShardedModel::note_resident() {
  std::vector<bool> resident(num_units_, false);
  int64_t bytes = 0;
  for (const auto& g : groups_) {
    if (!g.full.defined() || g.storage_freed) continue;
    resident[g.unit] = true;
    bytes += static_cast<int64_t>(g.full.nbytes());
  }
  stats_.peak_resident_units =
      std::max<int64_t>(stats_.peak_resident_units, std::count(resident.begin(), resident.end(), true));
  stats_.peak_gathered_bytes = std::max(stats_.peak_gathered_bytes, bytes);
}

void ShardedModel::free_unit(size_t unit) {
  const bool resident = !per_unit();
  for (size_t gi : unit_groups(unit)) {
    auto& g = groups_[gi];
    if (resident && g.full.defined()) continue;
    g.gathering.wait();  // a collective every rank issued must complete before its buffer goes
    for (auto& p : g.module_params) p.set_data(at::empty({0}, p.options()));
    g.full = at::Tensor();
    g.storage_freed = false;
  }
}

void ShardedModel::release_after_forward(size_t unit) {
  if (!per_unit() || !opts_.reshard_after_forward) return;  // kept gathered until this unit's backward
  // The last unit (norm + head) is the last forward and the first backward: freeing it in between
  // would only gather the same bytes again.
  if (unit + 1 == num_units_) return;
  for (size_t gi : unit_groups(unit)) {
    auto& g = groups_[gi];
    g.gathering.wait();
    free_storage(g.full);
    g.storage_freed = true;
  }
}

// The sharded units run the plain model's unit, never checkpointed by the model: UnitFunction
// recomputes the units the model checkpoints itself, so their grads reach the fp32 accumulators.
at::Tensor ShardedModel::run_unit(size_t unit, const at::Tensor& x) {
  return model_->run_unit(unit, x, in_, /*checkpoint=*/false);
}

at::Tensor ShardedModel::flatten_grads(const FlatGroup& g, const std::vector<at::Tensor>& grads) const {
  const auto grad_options = at::TensorOptions().dtype(at::kFloat).device(dist_.device());  // not the shard's: it may be offloaded
  std::vector<at::Tensor> parts;
  for (size_t k = 0; k < g.params.size(); ++k) {
    const auto& gr = grads[k];
    parts.push_back(gr.defined() ? gr.to(at::kFloat).reshape({-1}) : at::zeros({g.params[k].numel}, grad_options));
  }
  if (g.layout.padding() > 0) parts.push_back(at::zeros({g.layout.padding()}, grad_options));
  return at::cat(parts);
}

// Starts summing a full fp32 flat grad over the replicas (no_shard: all-reduce) or the shard group
// (reduce-scatter into this rank's slice); land_grads() puts the result in the shard's .grad.
void ShardedModel::issue_grad_reduce(size_t gi, const at::Tensor& flat_grad, bool assign) {
  at::NoGradGuard ng;
  auto& g = groups_[gi];
  GradInFlight f;
  f.group = gi;
  f.assign = assign;
  f.reduced = flat_grad;
  if (opts_.strategy == ShardStrategy::NoShard) {
    if (dist_.world_size() > 1) f.pending = dist_.all_reduce_async(f.reduced, Reduce::Sum, g.name + " grads");
  } else if (shard_world() > 1 || per_unit()) {
    f.reduced = at::empty({g.layout.shard_numel()}, flat_grad.options());
    f.pending = shard_dist().reduce_scatter_tensor_async(f.reduced, flat_grad, g.name + " grads");
  }
  grads_in_flight_.push_back(std::move(f));
  if (!opts_.prefetch) land_all_grads();
}

void ShardedModel::land_grads(size_t n) {
  at::NoGradGuard ng;
  for (size_t i = 0; i < n; ++i) {
    auto& f = grads_in_flight_[i];
    f.pending.wait();
    auto& shard = groups_[f.group].shard;
    // Micro-batches add up, as autograd would.
    if (!f.assign && shard.grad().defined()) shard.mutable_grad().add_(f.reduced);
    else shard.mutable_grad() = f.reduced;
  }
  grads_in_flight_.erase(grads_in_flight_.begin(), grads_in_flight_.begin() + static_cast<int64_t>(n));
}

at::Tensor& ShardedModel::grad_accumulator(FlatGroup& g) {
  return shard_world() == 1 ? g.shard.mutable_grad() : g.grad_acc;
}

void ShardedModel::fold_grads(FlatGroup& g, const std::vector<at::Tensor>& grads) {
  at::NoGradGuard ng;
  at::Tensor& acc = grad_accumulator(g);
  const bool first = !acc.defined();
  // On the device even when the masters are offloaded (finish_backward moves the final grads).
  if (first) acc = at::empty({g.layout.padded()}, at::TensorOptions().dtype(at::kFloat).device(dist_.device()));
  for (size_t k = 0; k < g.params.size(); ++k) {
    auto view = acc.narrow(0, g.params[k].offset, g.params[k].numel);
    if (!grads[k].defined()) {
      if (first) view.zero_();
    } else if (first) {
      view.copy_(grads[k].reshape({-1}));
    } else {
      view.add_(grads[k].reshape({-1}));  // fp32 += compute dtype, elementwise: no fp32 temporary
    }
  }
  if (first && g.layout.padding() > 0) acc.narrow(0, g.layout.numel(), g.layout.padding()).zero_();
}

// Per-unit strategies: the previous unit's reductions (issued in its backward) land once this
// unit's are issued, so one unit's reduce-scatter is in flight while the next unit's backward
// computes. Resident ones: folded into the fp32 accumulators at once.
void ShardedModel::accumulate_unit_grads(size_t unit, std::vector<at::Tensor> full_grads) {
  if (head_weight_grad_.defined()) {  // the fused loss's fp32 head weight grad stands in for autograd's
    auto params = unit_module_params(unit);
    for (size_t k = 0; k < params.size(); ++k)
      if (params[k].is_same(model_->head_weight())) full_grads[k] = std::move(head_weight_grad_);
    head_weight_grad_ = at::Tensor();
  }
  const size_t earlier = grads_in_flight_.size();
  size_t k = 0;
  for (size_t gi : unit_groups(unit, /*trainable_only=*/true)) {
    auto& g = groups_[gi];
    std::vector<at::Tensor> mine(full_grads.begin() + k, full_grads.begin() + k + g.params.size());
    k += g.params.size();
    if (per_unit()) issue_grad_reduce(gi, flatten_grads(g, mine), /*assign=*/false);
    else fold_grads(g, mine);
  }
  land_grads(std::min(earlier, grads_in_flight_.size()));
}

at::Tensor ShardedModel::run(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                             const at::Tensor& targets, int64_t trained, KVCache* cache,
                             const at::Tensor& head_rows) {
  in_ = model_->unit_inputs(positions.to(dist_.device()), opts_.compute_dtype, spec, cache);
  if (head_rows.defined()) in_.head_rows = head_rows.to(dist_.device());
  if (targets.defined()) in_.targets = targets.to(dist_.device());
  in_.trained = trained;
  // A frozen head weight gets no grad: the fused loss then computes none.
  if (at::GradMode::is_enabled() && model_->head_weight().requires_grad())
    in_.head_weight_grad = [this](at::Tensor g) { head_weight_grad_ = std::move(g); };
  return model_->run_units(tokens.to(dist_.device()), in_, [this](size_t u, const at::Tensor& h) {
    if (at::GradMode::is_enabled() && unit_trains(u, h)) {
      auto gs = unit_groups(u, /*trainable_only=*/true);
      // Autograd wants defined inputs that require grad; a one-group unit passes its shard twice, a
      // unit with none the anchor (the function gives them no autograd gradient either way, see
      // UnitFunction::backward).
      at::Tensor s0 = gs.empty() ? anchor_ : groups_[gs[0]].shard, s1 = gs.size() > 1 ? groups_[gs[1]].shard : s0;
      return detail::UnitFunction::apply(h, s0, s1, static_cast<int64_t>(u), reinterpret_cast<int64_t>(this));
    }
    gather_unit(u);
    prefetch_unit(static_cast<int64_t>(u) + 1);
    auto out = run_unit(u, h);
    if (per_unit()) free_unit(u);
    return out;
  });
}

at::Tensor ShardedModel::logits(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                                KVCache* cache, const at::Tensor& head_rows) {
  return run(tokens, positions, spec, at::Tensor(), -1, cache, head_rows);
}

at::Tensor ShardedModel::loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                                  const at::Tensor& targets, int64_t trained) {
  return run(tokens, positions, spec, targets, trained);
}

void ShardedModel::finish_backward() {
  land_all_grads();  // the per-unit strategies' last reduce-scatters (the embedding's)
  if (!per_unit()) {
    // The accumulators are reduced once per step: no_shard all-reduces the shard grads in place,
    // shard_grad_op reduce-scatters its full buffers into them (all issued, then waited on).
    const bool reduce = opts_.strategy == ShardStrategy::NoShard ? dist_.world_size() > 1 : shard_world() > 1;
    for (size_t gi : trainable_) {
      auto& g = groups_[gi];
      at::Tensor& acc = grad_accumulator(g);
      // A group no backward reached (or a step without one) has a zero grad: every rank reduces every group.
      if (!acc.defined()) acc = at::zeros({g.layout.padded()}, at::TensorOptions().dtype(at::kFloat).device(dist_.device()));
      if (!reduce) continue;
      issue_grad_reduce(gi, acc, /*assign=*/true);
      g.grad_acc = at::Tensor();  // the collective keeps what it reads until it completes
    }
    land_all_grads();
  }
  if (opts_.strategy == ShardStrategy::HybridShard && replica_group_->world_size() > 1) {
    std::vector<Pending> replicas;
    for (size_t gi : trainable_) {
      auto& g = groups_[gi];
      if (!g.shard.grad().defined()) continue;
      replicas.push_back(replica_group_->all_reduce_async(g.shard.mutable_grad(), Reduce::Sum, g.name + " replica grads"));
      if (!opts_.prefetch) replicas.back().wait();
    }
    for (auto& p : replicas) p.wait();
  }
  if (offloaded()) offload_grads();
}

at::Tensor ShardedModel::clip_grad_norm(double max_norm) {
  land_all_grads();  // nothing in flight after finish_backward; a guard for callers that skip it
  // Each shard group holds the whole gradient once; replicas hold copies, so only the shard group sums.
  ProcessGroup* sum_over = shard_world() > 1 ? &shard_dist() : nullptr;
  if (offloaded()) {
    // The norm of the device grads (the host copies' values, bit for bit), which are then dropped;
    // before_optimizer_step() scales the host grads once the step's sync has brought the factor over.
    at::NoGradGuard ng;
    at::Tensor norm = global_grad_norm(offloaded_device_grads_, dist_.device(), sum_over);
    offloaded_device_grads_.clear();
    host_clip_factor_ = max_norm > 0 ? at::empty({}, host_memory(dist_.device(), at::kDouble))
                                           .copy_(clip_factor(norm, max_norm), /*non_blocking=*/true)
                                     : at::Tensor();
    return norm;
  }
  std::vector<at::Tensor> grads;
  for (size_t gi : trainable_) grads.push_back(groups_[gi].shard.grad());
  return parallel::clip_grad_norm(grads, max_norm, dist_.device(), sum_over);
}

void ShardedModel::offload_grads() {
  at::NoGradGuard ng;
  offloaded_device_grads_.assign(groups_.size(), at::Tensor());
  for (size_t gi : trainable_) {
    auto& shard = groups_[gi].shard;
    at::Tensor dev = shard.grad();
    if (!dev.defined()) continue;
    // Queued behind the reduction on the compute stream: the host does not wait here; the step's
    // one sync (reading the loss and norm) waits for these copies too.
    at::Tensor host = at::empty(dev.sizes(), host_memory(dist_.device(), at::kFloat));
    host.copy_(dev, /*non_blocking=*/true);
    offloaded_device_grads_[gi] = dev;
    shard.mutable_grad() = host;
  }
}

void ShardedModel::refresh_device_shards() {
  at::NoGradGuard ng;
  for (size_t gi : trainable_) {
    auto& g = groups_[gi];
    if (!g.device_shard.defined())
      g.device_shard = at::empty({g.layout.shard_numel()}, at::TensorOptions().dtype(opts_.compute_dtype).device(dist_.device()));
    // The fp32 master is uploaded and cast on the device (as the resident path casts its master),
    // one group at a time: a bf16 staging copy on the host would cost 2 more pinned bytes per
    // parameter, and the device is idle here anyway (the optimizer ran on the host).
    at::Tensor master = g.shard.detach();
    if (opts_.compute_dtype == at::kFloat) g.device_shard.copy_(master, /*non_blocking=*/true);
    else g.device_shard.copy_(master.to(dist_.device(), /*non_blocking=*/true));
  }
}

void ShardedModel::before_optimizer_step() {
  if (!host_clip_factor_.defined()) return;
  at::NoGradGuard ng;
  // The factor and the grads arrived with the step's host sync; the same multiply as on the device.
  for (size_t gi : trainable_)
    if (groups_[gi].shard.grad().defined()) groups_[gi].shard.mutable_grad().mul_(host_clip_factor_);
  host_clip_factor_ = at::Tensor();
}

void ShardedModel::after_optimizer_step() {
  if (host_clip_factor_.defined())
    fail("dist.offload: optimizer: the optimizer stepped on unclipped host grads; call before_optimizer_step() "
         "between clip_grad_norm() and the optimizer step");
  if (offloaded()) refresh_device_shards();
  if (per_unit()) {
    // Nothing stays gathered between steps: a forward whose backward never ran (the head stays
    // gathered for it) must not keep parameters from before the update.
    for (size_t u = 0; u < num_units_; ++u) free_unit(u);
    return;
  }
  for (size_t gi : trainable_) groups_[gi].full = at::Tensor();  // stale: the shards changed
  gather_groups(trainable_);  // the frozen ones stay as they are
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::shard_params() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t gi : trainable_) out.emplace_back(groups_[gi].name, groups_[gi].shard);
  return out;
}

std::vector<bool> ShardedModel::shard_decay() const {
  std::vector<bool> out;
  for (size_t gi : trainable_) out.push_back(groups_[gi].decay);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::frozen_shards() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& g : groups_)
    if (g.frozen) out.emplace_back(g.name, g.shard.defined() ? g.shard : g.full);
  return out;
}

nlohmann::json ShardedModel::layout() const {
  nlohmann::json groups = nlohmann::json::array();
  for (size_t gi : trainable_) {
    const auto& g = groups_[gi];
    nlohmann::json params = nlohmann::json::array();
    for (const auto& p : g.params) params.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}});
    groups.push_back({{"name", g.name}, {"unit", g.unit}, {"decay", g.decay}, {"numel", g.layout.numel()}, {"params", params}});
  }
  return {{"strategy", shard_strategy_name(opts_.strategy)}, {"shard_world", shard_world()}, {"groups", groups}};
}

NamedTensors ShardedModel::own_slices(const FullGroup& full_of) const {
  NamedTensors out;
  for (size_t gi : trainable_) {
    const auto& g = groups_[gi];
    auto full = full_of(g.name, g.layout.numel()).to(at::kFloat).reshape({-1});
    if (full.numel() != g.layout.numel())
      fail("checkpoint group '{}' has {} elements, the model {}", g.name, full.numel(), g.layout.numel());
    // A copy, so each group's full buffer is freed here: resume peaks at one group, not the model.
    out.emplace_back(g.name, g.layout.slice(full, shard_rank()).clone());
  }
  return out;
}

void ShardedModel::load_full_groups(const FullGroup& full_of) {
  at::NoGradGuard ng;
  auto slices = own_slices(full_of);
  host_clip_factor_ = at::Tensor();  // a rollback after a skipped step drops its clip
  offloaded_device_grads_.clear();
  if (offloaded() && !dist_.device().is_cpu()) {
    // An upload queued from an fp32 host master (on the current stream) may still be reading it.
    const auto* impl = c10::impl::getDeviceGuardImpl(dist_.device().type());
    impl->synchronizeStream(impl->getStream(dist_.device()));
  }
  for (size_t k = 0; k < trainable_.size(); ++k) groups_[trainable_[k]].shard.copy_(slices[k].second);
  for (size_t u = 0; u < num_units_; ++u) free_unit(u);
  after_optimizer_step();
}

}  // namespace agenttune::parallel
