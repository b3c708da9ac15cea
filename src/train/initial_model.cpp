#include "agenttune/train/initial_model.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <map>
#include <mutex>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/model/lora.h"
#include "agenttune/parallel/nf4_weight_slices.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

// Slices of a checkpoint's tensors, read where they lie (a safetensors file is memory-mapped:
// only the pages of the slice are touched).
parallel::WeightSlices slices_of(std::shared_ptr<TensorSource> src) {
  return [src](const parallel::FlatParam& p, int64_t offset, int64_t numel) {
    return src->get(p.name).reshape({-1}).narrow(0, offset, numel).to(at::kFloat);
  };
}

bool is_vocab_matrix(const std::string& name) {
  return name == "model.embed_tokens.weight" || name == "lm_head.weight";
}

}  // namespace

InitialModel initial_model(const TrainConfig& cfg) {
  if (!cfg.model.shape) fail("initial_model: model.shape is not resolved (with_fitted_architecture gives it)");
  InitialModel m;
  if (cfg.model.init_from.empty()) {
    LlamaConfig shape = *cfg.model.shape;
    shape.dtype = at::kFloat;
    m.model = make_llama(shape, cfg.model.init_seed);
    m.description = fmt::format("fresh initialisation (seed {})", cfg.model.init_seed);
    return m;
  }
  const fs::path& dir = cfg.model.init_from;
  const WeightFormat format = detect_weight_format(dir);
  // The folder's config was read once, by with_fitted_architecture, into model.shape.
  LlamaConfig c = *cfg.model.shape;
  c.dtype = at::kFloat;  // fp32 masters whatever the checkpoint holds
  m.source = open_weights(dir, format, c);
  m.model = LlamaForCausalLM(c);
  check_weights(m.model, *m.source);
  if (format == WeightFormat::MetaPth)
    log::warn("{}: a Meta consolidated.*.pth checkpoint is read whole by every rank; convert it once to a Hugging "
              "Face safetensors folder so that each rank reads only its own shards",
              dir.string());
  m.weights = slices_of(m.source);
  m.description = fmt::format("continuing from {} ({}; each rank reads its own shards)", dir.string(), to_string(format));
  return m;
}

void grow_initial_vocab(InitialModel& m, int64_t vocab) {
  if (!m.weights) {
    m.model = grow_vocab(m.model, vocab);
    return;
  }
  const int64_t old_vocab = m.model->config().vocab_size;
  if (vocab == old_vocab) return;
  if (vocab < old_vocab) fail("cannot shrink the vocabulary from {} to {} tokens", old_vocab, vocab);
  LlamaConfig c = m.model->config();
  c.vocab_size = vocab;
  const Recompute recompute = m.model->recompute;
  m.model = LlamaForCausalLM(c);
  m.model->recompute = recompute;
  // The grown embedding and head are built once, whole (vocab x hidden: the largest matrices, but
  // one of each), and sliced like the rest.
  auto grown = std::make_shared<std::map<std::string, at::Tensor>>();
  auto mu = std::make_shared<std::mutex>();
  m.weights = [src = m.source, grown, mu, old_vocab, vocab](const parallel::FlatParam& p, int64_t offset, int64_t numel) {
    at::Tensor full;
    if (is_vocab_matrix(p.name)) {
      std::lock_guard<std::mutex> lock(*mu);
      auto& t = (*grown)[p.name];
      if (!t.defined()) {
        auto old = src->get(p.name).to(at::kFloat);
        t = at::cat({old, old.mean(0, /*keepdim=*/true).expand({vocab - old_vocab, -1})});
      }
      full = t;
    } else {
      full = src->get(p.name);
    }
    return full.reshape({-1}).narrow(0, offset, numel).to(at::kFloat);
  };
}

void add_initial_adapters(InitialModel& m, const AdapterConfig& adapter) {
  if (!adapter.enabled()) return;
  add_adapters(m.model, adapter);
  int64_t trained = 0, all = 0;
  for (const auto& p : m.model->parameters()) all += p.numel(), trained += p.requires_grad() ? p.numel() : 0;
  log::info("model: {} adapters of rank {} (alpha {}{}) on {}: {} of {} parameters train, the base is frozen",
            enum_name(adapter.kind), adapter.rank, adapter.alpha, adapter.rslora ? ", rsLoRA" : "",
            fmt::join(adapter.target_modules, ", "), trained, all);
  if (m.weights) {  // else a fresh model: the engine reads every initial value from the model
    auto adapters = std::make_shared<std::map<std::string, at::Tensor>>();
    for (const auto& p : m.model->named_parameters())
      if (p.value().requires_grad()) (*adapters)[p.key()] = p.value();
    m.weights = [base = std::move(m.weights), adapters](const parallel::FlatParam& p, int64_t offset, int64_t numel) {
      auto it = adapters->find(p.name);
      if (it == adapters->end()) return base(p, offset, numel);
      return it->second.detach().reshape({-1}).narrow(0, offset, numel).to(at::kFloat);
    };
  }
  if (adapter.kind != AdapterKind::Qlora) return;
  // QLoRA: the projections hold NF4 records, quantised here from the fresh model's values, or from
  // the checkpoint's weights as each rank reads its slices of them.
  quantize_projections(m.model, /*quantise_values=*/!m.weights);
  m.weights = parallel::nf4_weight_slices(std::move(m.weights), m.model);
  log::info("model: QLoRA: the projections of every layer are held as NF4 (bitsandbytes' 4-bit NormalFloat, blocks "
            "of 64, double-quantised absmax); embeddings, norms and the head stay in model.compute_dtype");
}

}  // namespace agenttune
