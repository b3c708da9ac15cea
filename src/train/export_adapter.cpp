// Exports of an adapter run (LoRA, QLoRA): its checkpoint holds only the adapters, so the base is
// rebuilt from the run's config (export_base.cpp). `--adapter-only` writes the adapters as a PEFT
// folder; otherwise they are merged into the base (W += scale * B A, as PEFT's merge_and_unload)
// and the merged model is written like any export.
#include <ATen/ATen.h>

#include <map>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/hf_config.h"
#include "agenttune/io/peft_adapter.h"
#include "agenttune/model/lora.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/log.h"
#include "export_parts.h"

namespace agenttune {

namespace {

// The checkpoint's adapter tensors (float32, our names): all a LoRA checkpoint's groups hold.
NamedTensors checkpoint_adapters(const LoadedCheckpoint& ck) {
  NamedTensors out;
  for_each_checkpoint_tensor(ck, at::kFloat, [&](const std::string& name, const at::Tensor& t) {
    if (!is_adapter_parameter(name))
      fail("{}: an adapter checkpoint holding {}, which is not an adapter parameter", ck.dir.string(), name);
    out.emplace_back(name, t);
  });
  return out;
}

void log_qlora_base(const AdapterConfig& adapter, const char* what) {
  if (adapter.kind == AdapterKind::Qlora)
    log::info("export: QLoRA run: {} the dequantised NF4 base the adapters were trained against (each projection's "
              "NF4 round trip, in float32), not the original weights",
              what);
}

// The run's base with the checkpoint's adapters on it, float32.
LlamaForCausalLM adapted_model(const LoadedCheckpoint& ck, const TrainConfig& cfg, const NamedTensors& adapters) {
  auto model = checkpoint_base_model(ck, cfg);
  load_adapter_values(model, adapters, ck.dir.string());
  return model;
}

// ---- the merged model ----

ExportWeights model_weights(LlamaForCausalLM& model, c10::ScalarType dtype) {
  ExportWeights w;
  for (const auto& p : model->named_parameters())
    w.sizes.push_back({p.key(), static_cast<uint64_t>(p.value().numel()) * c10::elementSize(dtype)});
  w.stream = [model](c10::ScalarType dt, const TensorSink& sink) mutable {
    for (const auto& p : model->named_parameters()) sink(p.key(), p.value().detach().to(dt).contiguous());
  };
  return w;
}

// The merged float32 model must compute what base + adapters computed (only float32
// reassociation differs): a wrong merge (a transposed product, a missing scale) fails here.
void check_merge(LlamaForCausalLM& merged, const at::Tensor& tokens, const at::Tensor& unmerged,
                 const fs::path& shown, ExportCheck& check) {
  const auto logits = probe_logits(merged, tokens);
  const double diff = (logits - unmerged).abs().max().item<double>();
  const double tol = python_logits_tolerance(unmerged);
  if (!std::isfinite(diff) || diff > tol)
    fail_check(shown, "the merged float32 model's logits differ from the base + adapters' by {:.3g} (tolerance {:.3g})",
               diff, tol);
  check.merge_max_dlogit = diff;
  check.merge_tolerance = tol;
  log::info("export check: the merged float32 model computes what base + adapters did: probe logits max |Δlogit| = "
            "{:.3g} (tolerance {:.3g})",
            diff, tol);
}

ExportJob merged_job(const LoadedCheckpoint& ck, const ExportOptions& o, const TrainConfig& run) {
  auto model = adapted_model(ck, run, checkpoint_adapters(ck));
  log_qlora_base(run.model.adapter, "the adapters are merged into");
  at::Tensor tokens, unmerged;
  if (o.verify != ExportVerify::None) {
    tokens = probe_tokens(model->config());
    unmerged = probe_logits(model, tokens);
  }
  merge_adapters(model);
  auto cfg = model->config();
  cfg.dtype = o.dtype.value_or(at::kBFloat16);
  ExportJob job;
  job.kind = ExportKind::MergedAdapters;
  job.write = [&ck, &o, model, cfg](const fs::path& dir) mutable {
    return write_model_folder(model_weights(model, cfg.dtype), cfg, o, checkpoint_tokenizer(ck), dir);
  };
  job.verify = [&o, model, cfg, tokens, unmerged](const fs::path& dir, const fs::path& shown) mutable {
    ProbeLogits probe;
    auto check = verify_export(model_weights(model, at::kFloat).stream, cfg, dir, shown, probe);
    check_merge(model, tokens, unmerged, shown, check);
    if (o.verify == ExportVerify::Transformers) verify_in_transformers(dir, shown, o.python, probe, check);
    return check;
  };
  return job;
}

// ---- the PEFT adapter folder ----

std::string first_config_difference(const AdapterConfig& a, const AdapterConfig& b) {
  if (a.rank != b.rank) return "r";
  if (a.alpha != b.alpha) return "lora_alpha";
  if (a.dropout != b.dropout) return "lora_dropout";
  if (a.rslora != b.rslora) return "use_rslora";
  if (a.target_modules != b.target_modules) return "target_modules";
  return "";
}

// Our reader's reading of the folder against the checkpoint: the config, every tensor exactly the
// checkpoint's rounded to `dtype`, and the probe logits of base + adapter as read against base +
// the checkpoint's float32 adapters. Leaves the read values in `model` (what probe.logits used).
ExportCheck verify_adapter_folder(LlamaForCausalLM& model, const AdapterConfig& adapter, const NamedTensors& masters,
                                  c10::ScalarType dtype, const fs::path& dir, const fs::path& shown,
                                  ProbeLogits& probe) {
  PeftAdapter back;
  try {
    back = read_peft_adapter(dir);
  } catch (const Error& e) {
    fail_check(shown, "our reader cannot read what was written: {}", e.what());
  }
  if (auto field = first_config_difference(adapter, back.config); !field.empty())
    fail_check(shown, "adapter_config.json reads back with another {} than the run's", field);
  std::map<std::string, at::Tensor> written(back.tensors.begin(), back.tensors.end());
  if (written.size() != masters.size())
    fail_check(shown, "the folder has {} adapter tensors, the checkpoint {}", written.size(), masters.size());
  size_t differing = 0;
  std::string first;
  for (const auto& [name, t] : masters) {
    auto it = written.find(name);
    if (it == written.end()) fail_check(shown, "tensor {} is missing", peft_tensor_name(name));
    if (!at::equal(it->second, t.to(dtype).to(at::kFloat)) && differing++ == 0) first = peft_tensor_name(name);
  }
  probe.tokens = probe_tokens(model->config());
  const auto reference = probe_logits(model, probe.tokens);  // the checkpoint's float32 adapters
  load_adapter_values(model, back.tensors, dir.string());
  probe.logits = probe_logits(model, probe.tokens);

  ExportCheck c;
  c.max_dlogit = (probe.logits - reference).abs().max().item<double>();
  c.max_abs_logit = reference.abs().max().item<double>();
  c.tolerance = export_logits_tolerance(dtype, model->config().num_hidden_layers, c.max_abs_logit);
  if (!std::isfinite(c.max_dlogit) || c.max_dlogit > c.tolerance || differing > 0)
    fail_check(shown, "probe logits of base + adapter max |Δlogit| = {:.3g} against the checkpoint's (tolerance {:.3g} "
               "for {}){}",
               c.max_dlogit, c.tolerance, dtype_name(dtype),
               differing ? fmt::format("; {} tensor(s) differ from the checkpoint's rounded to {}, first {}", differing,
                                       dtype_name(dtype), first)
                         : "");
  log::info("export check: {} reads back with our reader with every adapter tensor equal to the checkpoint's rounded "
            "to {} and the same adapter config; probe logits of base + adapter max |Δlogit| = {:.3g} against the "
            "checkpoint's float32 adapters (tolerance {:.3g}, max |logit| {:.3g})",
            shown.string(), dtype_name(dtype), c.max_dlogit, c.tolerance, c.max_abs_logit);
  return c;
}

// A vocabulary the run grew (a chat template's added tokens) lives in the embedding and head rows,
// which an adapter does not hold: PEFT would put the adapter on the original, smaller base.
void refuse_grown_vocab(const TrainConfig& run, const LoadedCheckpoint& ck) {
  const int64_t original = run.model.shape->vocab_size, trained = checkpoint_model_config(ck).vocab_size;
  if (original != trained)
    fail("--adapter-only: the run grew the vocabulary from {} to {} tokens (its chat template's added tokens); the "
         "new embedding rows are not part of an adapter, so a PEFT folder cannot hold them. Export the merged model "
         "(without --adapter-only)",
         original, trained);
}

// The base alone (no adapter parameters) as a float32 model folder, for PEFT to put the adapter on.
void save_base_folder(LlamaForCausalLM& model, const fs::path& dir) {
  NamedTensors base;
  for (const auto& p : model->named_parameters())
    if (!is_adapter_parameter(p.key())) base.emplace_back(p.key(), p.value().detach().to(at::kFloat).contiguous());
  auto cfg = model->config();
  cfg.dtype = at::kFloat;
  write_sharded_safetensors(dir, base, 0);
  write_hf_config(dir / "config.json", cfg);
  write_generation_config(dir, cfg);
}

ExportJob adapter_folder_job(const LoadedCheckpoint& ck, const ExportOptions& o, const TrainConfig& run) {
  if (!o.tokenizer.empty() || !o.chat_template.empty())
    fail("--adapter-only writes the adapter alone (adapter_config.json, adapter_model.safetensors): --tokenizer and "
         "--template belong to a model folder; export the merged model to get them");
  refuse_grown_vocab(run, ck);
  const auto& adapter = run.model.adapter;
  const std::string base_path = run.model.init_from.string();
  if (base_path.empty())
    log::warn("export: the run started from a fresh initialisation (model.init_from unset): the adapter's "
              "base_model_name_or_path is null, and only that same initialisation fits it");
  log_qlora_base(adapter, "the adapter is a LoRA adapter of");
  auto masters = checkpoint_adapters(ck);
  auto model = adapted_model(ck, run, masters);
  ExportJob job;
  job.kind = ExportKind::AdapterFolder;
  const auto dtype = o.dtype.value_or(at::kFloat);
  job.write = [adapter, base_path, masters, dtype](const fs::path& dir) {
    write_peft_adapter(dir, adapter, base_path, masters, dtype);
    ShardedWrite w;
    w.files = {dir / "adapter_model.safetensors"};
    for (const auto& [name, t] : masters) w.total_bytes += static_cast<uint64_t>(t.numel()) * c10::elementSize(dtype);
    return w;
  };
  job.verify = [&o, adapter, masters, dtype, model](const fs::path& dir, const fs::path& shown) mutable {
    ProbeLogits probe;
    auto check = verify_adapter_folder(model, adapter, masters, dtype, dir, shown, probe);
    if (o.verify == ExportVerify::Transformers) {
      // PEFT loads the base from a folder: the float32 base we hold (for QLoRA the dequantised
      // one), so both sides compute on the same base.
      ScratchFolder base(dir.parent_path() / (dir.filename().string() + ".base"));
      save_base_folder(model, base.path);
      verify_in_peft(base.path, dir, shown, o.python, probe, check);
    }
    return check;
  };
  return job;
}

}  // namespace

bool checkpoint_has_adapters(const LoadedCheckpoint& ck) { return ck.meta.contains("base"); }

ExportJob plan_adapter_export(const LoadedCheckpoint& ck, const ExportOptions& o) {
  const auto run = checkpoint_train_config(ck);
  if (!run.model.adapter.enabled())
    fail("{}: meta.json records a frozen base but the run's config has model.adapter.kind none", ck.dir.string());
  return o.adapter_only ? adapter_folder_job(ck, o, run) : merged_job(ck, o, run);
}

}  // namespace agenttune
