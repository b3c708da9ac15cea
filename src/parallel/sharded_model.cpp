#include "agenttune/parallel/sharded_model.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <algorithm>
#include <cmath>

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

void alloc_storage(const at::Tensor& t) {
  auto* s = t.storage().unsafeGetStorageImpl();
  const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
  s->set_data_ptr_noswap(s->allocator()->allocate(bytes));
  s->set_nbytes(bytes);
}

}  // namespace

namespace detail {

// One sharded unit. Forward gathers its parameters, runs it and frees them (or keeps them for
// backward when dist.reshard_after_forward is off). Backward re-gathers them and either walks the
// graph the forward kept, or, when the model checkpoints the unit, recomputes it first; then it
// hands the reduce-scattered fp32 grads to the shards.
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
      at::Tensor out;
      {
        at::NoGradGuard ng;
        out = self->run_unit(u, x);
      }
      self->free_unit(u);
      return out;
    }
    // Keep this unit's graph (a sub-graph from a fresh leaf, so the outer graph holds only this
    // node); backward walks it with the parameters gathered again.
    at::Tensor xin = x.is_floating_point() ? x.detach().requires_grad_(true) : x;
    at::Tensor out;
    {
      at::AutoGradMode enable(true);
      out = self->run_unit(u, xin);
    }
    ctx->saved_data["xin"] = xin;
    ctx->saved_data["out"] = out;
    self->release_after_forward(u);
    return out.detach();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* self = reinterpret_cast<ShardedModel*>(ctx->saved_data["owner"].toInt());
    auto unit = static_cast<size_t>(ctx->saved_data["unit"].toInt());
    self->gather_unit(unit);
    self->prefetch_unit(static_cast<int64_t>(unit) - 1);  // backward walks the units in reverse
    at::Tensor xin, out;
    if (ctx->saved_data.count("out")) {
      xin = ctx->saved_data["xin"].toTensor();
      out = ctx->saved_data["out"].toTensor();
      ctx->saved_data.erase("out");
      ctx->saved_data.erase("xin");
    } else {
      at::Tensor x = ctx->get_saved_variables()[0];
      xin = x.is_floating_point() ? x.detach().requires_grad_(true) : x;
      at::AutoGradMode enable(true);
      out = self->run_unit(unit, xin);
    }
    auto params = self->unit_module_params(unit);
    std::vector<at::Tensor> inputs = params;
    if (xin.requires_grad()) inputs.insert(inputs.begin(), xin);
    auto grads = torch::autograd::grad({out}, inputs, {grad_out[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    out.reset();
    at::Tensor grad_x;
    if (xin.requires_grad()) grad_x = grads[0], grads.erase(grads.begin());
    self->reduce_unit_grads(unit, grads);
    grads.clear();
    self->free_unit(unit);
    // reduce_unit_grads accumulates the grads into the shards' .grad itself (summed over ranks
    // first), so the shard inputs get no gradient from autograd: it would add them twice.
    torch::autograd::variable_list result{grad_x, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    return result;
  }
};

}  // namespace detail

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& all_grads, double max_norm, c10::Device device,
                          ProcessGroup* sum_over) {
  at::NoGradGuard ng;
  std::vector<at::Tensor> grads;
  for (const auto& g : all_grads)
    if (g.defined()) grads.push_back(g);
  // Per tensor in fp32 (one fused pass over the grads, as torch's clip_grad_norm_), combined in fp64.
  at::Tensor sq = grads.empty() ? at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device))
                                : at::stack(at::_foreach_norm(grads, 2)).to(at::kDouble).pow(2).sum();
  if (sum_over) sum_over->all_reduce(sq, Reduce::Sum, "grad_norm");
  at::Tensor norm = sq.sqrt();
  if (max_norm <= 0) return norm;
  // Scaling by exactly 1 changes no bit, so the grads are always multiplied: deciding on the host
  // whether to clip would cost a sync. A non-finite norm leaves them as they are (the step is skipped).
  auto factor = at::where(at::isfinite(norm), (max_norm / (norm + 1e-6)).clamp_max(1.0), at::ones_like(norm));
  for (auto& g : grads) g.mul_(factor);
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
  if (model_->config().tie_word_embeddings)
    fail("sharded training of a model with tied embeddings is not supported (Llama-2 is untied)");
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
  build_groups(weights);
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
    parts.push_back(part.to(at::kCPU, at::kFloat).reshape({-1}));
    have += b - a;
  }
  if (have < len) parts.push_back(at::zeros({len - have}, at::kFloat));  // the group's padding
  return at::cat(parts);
}

void ShardedModel::build_groups(const WeightSlices& weights) {
  auto& m = *model_;
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> units;
  units.push_back({{"model.embed_tokens.weight", m.model->embed_tokens->weight}});
  for (size_t i = 0; i < m.model->layers.size(); ++i) {
    std::vector<std::pair<std::string, at::Tensor>> u;
    for (auto& p : m.model->layers[i]->named_parameters())
      u.emplace_back("model.layers." + std::to_string(i) + "." + p.key(), p.value());
    units.push_back(u);
  }
  units.push_back({{"model.norm.weight", m.model->norm->weight}, {"lm_head.weight", m.lm_head->weight}});
  num_units_ = units.size();

  at::NoGradGuard ng;
  for (size_t u = 0; u < units.size(); ++u) {
    for (bool decay : {true, false}) {
      FlatGroup g;
      g.unit = u;
      g.decay = decay;
      g.name = (u == 0 ? std::string("embed") : u + 1 == units.size() ? std::string("head")
                                                                         : "layers." + std::to_string(u - 1)) +
               (decay ? ".decay" : ".no_decay");
      int64_t numel = 0;
      for (auto& [name, p] : units[u]) {
        if ((p.dim() >= 2) != decay) continue;
        g.params.push_back({name, p.sizes().vec(), numel, p.numel()});
        g.module_params.push_back(p);
        numel += p.numel();
      }
      if (g.params.empty()) continue;
      g.layout = ShardLayout(numel, shard_world());
      // Only this rank's slice is read and reaches the device; the model's own storage goes below.
      g.shard = read_slice(g, weights).to(dist_.device()).requires_grad_(true);
      groups_.push_back(std::move(g));
    }
  }
  // The model's own storage is released: from here on its parameters are views of gathered
  // buffers (resident for shard_grad_op / no_shard, per unit for full and hybrid sharding).
  for (size_t u = 0; u < num_units_; ++u) free_unit(u);
  if (!per_unit())
    for (size_t u = 0; u < num_units_; ++u) gather_unit(u);
}

std::vector<size_t> ShardedModel::unit_groups(size_t unit) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < groups_.size(); ++i)
    if (groups_[i].unit == unit) out.push_back(i);
  return out;
}

std::vector<at::Tensor> ShardedModel::unit_module_params(size_t unit) const {
  std::vector<at::Tensor> out;
  for (size_t gi : unit_groups(unit))
    for (const auto& p : groups_[gi].module_params) out.push_back(p);
  return out;
}

bool ShardedModel::per_unit() const {
  // A shard group of one holds every parameter anyway: gathering per unit would only copy.
  return (opts_.strategy == ShardStrategy::FullShard || opts_.strategy == ShardStrategy::HybridShard) &&
         shard_world() > 1;
}

ProcessGroup& ShardedModel::shard_dist() { return opts_.strategy == ShardStrategy::HybridShard ? *shard_group_ : dist_; }

// Allocates the group's compute-dtype buffer, points the module's parameters at it and starts
// filling it; the views must not be read before `gathering` is waited on.
void ShardedModel::issue_gather(FlatGroup& g) {
  at::NoGradGuard ng;
  // In a shard group of one the fp32 master is the whole group: in fp32 the module computes on
  // it directly (no copy at all), in bf16 on a cast refreshed once per optimizer step.
  auto local = g.shard.detach().to(opts_.compute_dtype);
  if (g.full.defined() && g.storage_freed) {  // resharded after forward: refill the same storage
    alloc_storage(g.full);
    g.storage_freed = false;
    g.gathering = shard_dist().all_gather_into_tensor_async(g.full, local, g.name);
    return;
  }
  if (shard_world() == 1) {
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
  for (size_t gi : groups) groups_[gi].gathering.wait();
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
  if (!opts_.reshard_after_forward) return;  // kept gathered until this unit's backward
  for (size_t gi : unit_groups(unit)) {
    auto& g = groups_[gi];
    g.gathering.wait();
    free_storage(g.full);
    g.storage_freed = true;
  }
}

// The sharded units run the plain model's unit; their own recompute (per-unit strategies) runs it
// unchecked, the resident strategies let the model checkpoint as it decides.
at::Tensor ShardedModel::run_unit(size_t unit, const at::Tensor& x) {
  return model_->run_unit(unit, x, in_, !per_unit() && at::GradMode::is_enabled() && model_->checkpointed(unit));
}

at::Tensor ShardedModel::flatten_grads(const FlatGroup& g, const std::vector<at::Tensor>& grads) const {
  std::vector<at::Tensor> parts;
  for (size_t k = 0; k < g.params.size(); ++k) {
    const auto& gr = grads[k];
    parts.push_back(gr.defined() ? gr.to(at::kFloat).reshape({-1}) : at::zeros({g.params[k].numel}, g.shard.options()));
  }
  if (g.layout.padding() > 0) parts.push_back(at::zeros({g.layout.padding()}, g.shard.options()));
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
  } else if (shard_world() > 1) {
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

// The previous unit's reductions (issued in its backward) land once this unit's are issued: one
// unit's reduce-scatter is in flight while the next unit's backward computes.
void ShardedModel::reduce_unit_grads(size_t unit, const std::vector<at::Tensor>& full_grads) {
  const size_t earlier = grads_in_flight_.size();
  size_t k = 0;
  for (size_t gi : unit_groups(unit)) {
    auto& g = groups_[gi];
    std::vector<at::Tensor> mine(full_grads.begin() + k, full_grads.begin() + k + g.params.size());
    k += g.params.size();
    issue_grad_reduce(gi, flatten_grads(g, mine), /*assign=*/false);
  }
  land_grads(std::min(earlier, grads_in_flight_.size()));
}

at::Tensor ShardedModel::run(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                             const at::Tensor& targets, int64_t trained) {
  in_ = model_->unit_inputs(positions.to(dist_.device()), opts_.compute_dtype, spec);
  if (targets.defined()) in_.targets = targets.to(dist_.device());
  in_.trained = trained;
  return model_->run_units(tokens.to(dist_.device()), in_, [this](size_t u, const at::Tensor& h) {
    if (per_unit() && at::GradMode::is_enabled()) {
      auto gs = unit_groups(u);
      // Autograd wants defined inputs; a one-group unit passes its shard twice (the function
      // gives the shards no autograd gradient either way, see UnitFunction::backward).
      at::Tensor s0 = groups_[gs[0]].shard, s1 = gs.size() > 1 ? groups_[gs[1]].shard : s0;
      return detail::UnitFunction::apply(h, s0, s1, static_cast<int64_t>(u), reinterpret_cast<int64_t>(this));
    }
    gather_unit(u);
    prefetch_unit(static_cast<int64_t>(u) + 1);
    auto out = run_unit(u, h);
    if (per_unit()) free_unit(u);
    return out;
  });
}

at::Tensor ShardedModel::logits(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec) {
  return run(tokens, positions, spec, at::Tensor(), -1);
}

at::Tensor ShardedModel::loss_sum(const at::Tensor& tokens, const at::Tensor& positions, const AttentionSpec& spec,
                                  const at::Tensor& targets, int64_t trained) {
  return run(tokens, positions, spec, targets, trained);
}

void ShardedModel::finish_backward() {
  land_all_grads();  // the per-unit strategies' last reduce-scatters (the embedding's)
  if (!per_unit()) {
    // One group's reduction in flight while the next is flattened.
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      auto& g = groups_[gi];
      std::vector<at::Tensor> grads;
      for (auto& p : g.module_params) grads.push_back(p.grad());
      auto flat = flatten_grads(g, grads);
      for (auto& p : g.module_params) p.mutable_grad().reset();
      const size_t earlier = grads_in_flight_.size();
      issue_grad_reduce(gi, flat, /*assign=*/true);
      land_grads(std::min(earlier, grads_in_flight_.size()));
    }
    land_all_grads();
  }
  if (opts_.strategy == ShardStrategy::HybridShard && replica_group_->world_size() > 1) {
    std::vector<Pending> replicas;
    for (auto& g : groups_) {
      if (!g.shard.grad().defined()) continue;
      replicas.push_back(replica_group_->all_reduce_async(g.shard.mutable_grad(), Reduce::Sum, g.name + " replica grads"));
      if (!opts_.prefetch) replicas.back().wait();
    }
    for (auto& p : replicas) p.wait();
  }
}

at::Tensor ShardedModel::clip_grad_norm(double max_norm) {
  land_all_grads();  // nothing in flight after finish_backward; a guard for callers that skip it
  std::vector<at::Tensor> grads;
  for (auto& g : groups_) grads.push_back(g.shard.grad());
  // Each shard group holds the whole gradient once; replicas hold copies, so only the shard group sums.
  return parallel::clip_grad_norm(grads, max_norm, dist_.device(), shard_world() > 1 ? &shard_dist() : nullptr);
}

void ShardedModel::after_optimizer_step() {
  if (per_unit()) return;
  std::vector<size_t> all(groups_.size());
  for (size_t gi = 0; gi < all.size(); ++gi) {
    all[gi] = gi;
    groups_[gi].full = at::Tensor();  // stale: the shards changed
  }
  gather_groups(all);
}

std::vector<std::pair<std::string, at::Tensor>> ShardedModel::shard_params() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& g : groups_) out.emplace_back(g.name, g.shard);
  return out;
}

std::vector<bool> ShardedModel::shard_decay() const {
  std::vector<bool> out;
  for (const auto& g : groups_) out.push_back(g.decay);
  return out;
}

nlohmann::json ShardedModel::layout() const {
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : groups_) {
    nlohmann::json params = nlohmann::json::array();
    for (const auto& p : g.params) params.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}});
    groups.push_back({{"name", g.name}, {"unit", g.unit}, {"decay", g.decay}, {"numel", g.layout.numel()}, {"params", params}});
  }
  return {{"strategy", shard_strategy_name(opts_.strategy)}, {"shard_world", shard_world()}, {"groups", groups}};
}

NamedTensors ShardedModel::own_slices(const FullGroup& full_of) const {
  NamedTensors out;
  for (const auto& g : groups_) {
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
  for (size_t gi = 0; gi < groups_.size(); ++gi) groups_[gi].shard.copy_(slices[gi].second);
  for (size_t u = 0; u < num_units_; ++u) free_unit(u);
  after_optimizer_step();
}

}  // namespace agenttune::parallel
