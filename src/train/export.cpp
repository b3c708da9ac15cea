// Writing an export into a temporary sibling folder and publishing it only once verified. A full
// run's weights stream group by group from the rank files into shard files: the whole model is never
// assembled in memory while writing (verification holds one float32 copy; ExportVerify::None skips
// it). An adapter run's export (export_adapter.cpp) holds the float32 base it rebuilds.
#include "agenttune/train/export.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "agenttune/chat/template.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/hf_config.h"
#include "agenttune/io/hf_tokenizer_config.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/train/checkpoint_store.h"
#include "agenttune/train/train_state.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/log.h"
#include "export_parts.h"

namespace agenttune {

ExportVerify parse_export_verify(const std::string& name) {
  if (auto v = parse_enum<ExportVerify>(name)) return *v;
  fail("--verify {}: expected one of {}", name, enum_name_list<ExportVerify>());
}

namespace {

std::vector<TensorSize> tensor_sizes_from_layout(const LoadedCheckpoint& ck, c10::ScalarType dtype) {
  std::vector<TensorSize> sizes;
  for (const auto& g : ck.meta.at("layout").at("groups"))
    for (const auto& p : g.at("params")) {
      uint64_t n = 1;
      for (auto d : p.at("shape")) n *= d.get<uint64_t>();
      sizes.push_back({p.at("name").get<std::string>(), n * c10::elementSize(dtype)});
    }
  return sizes;
}

fs::path resolve_checkpoint(const fs::path& given) {
  if (fs::exists(given / "meta.json")) return given;
  auto latest = CheckpointStore(given, 1).latest();
  if (!latest) fail("{}: neither a checkpoint folder nor a folder holding complete checkpoints", given.string());
  return *latest;
}

// Refuses a destination we must not replace: a file, or a folder holding anything but a model or
// an adapter (an empty folder or an earlier export is fine). Replacing `--out ~` wholesale would be
// a disaster.
void check_destination(const fs::path& out) {
  if (!fs::exists(out)) return;
  if (!fs::is_directory(out)) fail("--out {}: exists and is not a folder", out.string());
  if (fs::is_empty(out) || fs::exists(out / "config.json") || fs::exists(out / "adapter_config.json")) return;
  fail("--out {}: a non-empty folder without config.json or adapter_config.json (not a model folder, nor an adapter "
       "one); refusing to replace it",
       out.string());
}

std::string temp_prefix(const fs::path& out) { return "." + out.filename().string() + ".export-"; }

// Temporary folders of exports to the same destination whose process is gone (killed mid-export).
void remove_dead_temporaries(const fs::path& out) {
  const auto parent = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  const auto prefix = temp_prefix(out);
  std::error_code ec;
  for (auto& e : fs::directory_iterator(parent, ec)) {
    const auto n = e.path().filename().string();
    if (n.rfind(prefix, 0) != 0) continue;
    const long pid = std::strtol(n.c_str() + prefix.size(), nullptr, 10);
    if (pid > 0 && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
  }
}

// Removes the temporary folder unless it was published: any failure leaves no trace.
struct TempFolder {
  fs::path path;
  bool keep = false;
  ~TempFolder() {
    std::error_code ec;
    if (!keep) fs::remove_all(path, ec);
  }
};

// Puts `tmp` at `out`. An existing folder is swapped out atomically (renameat2 RENAME_EXCHANGE), so
// readers see the old export or the new one, never a mix; then the old one is deleted.
void publish(const fs::path& tmp, const fs::path& out) {
  if (!fs::exists(out)) {
    fs::rename(tmp, out);
  } else if (renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, out.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp);
  } else {
    // Filesystems without RENAME_EXCHANGE: move the old one aside first.
    auto old = tmp;
    old += ".old";
    fs::rename(out, old);
    fs::rename(tmp, out);
    fs::remove_all(old);
  }
  fsync_dir(out.parent_path().empty() ? fs::path(".") : out.parent_path());
}

// The test-only corruption (AGENTTUNE_TEST_CORRUPT_EXPORT=<tensor name>): flips the sign bit of every
// element of that tensor in the written files, as a writer bug or a bad disk would, so the tests
// can show that verification catches it. Not a flag: no user should ever reach it.
void corrupt_for_test(const fs::path& dir) {
  const char* name = std::getenv("AGENTTUNE_TEST_CORRUPT_EXPORT");
  if (!name || !*name) return;
  if (!flip_tensor_signs(dir, name)) fail("AGENTTUNE_TEST_CORRUPT_EXPORT={}: no such tensor in {}", name, dir.string());
  log::warn("AGENTTUNE_TEST_CORRUPT_EXPORT: negated {} after writing", name);
}

// A full fine-tuning checkpoint: its fp32 master groups, streamed from the rank files.
ExportJob plan_model_export(const LoadedCheckpoint& ck, const ExportOptions& o) {
  if (o.adapter_only)
    fail("--adapter-only: {} is a full fine-tuning checkpoint (its run has no model.adapter), so there is no adapter "
         "to export; export the model without --adapter-only",
         ck.dir.string());
  auto cfg = checkpoint_model_config(ck);
  cfg.dtype = o.dtype.value_or(at::kBFloat16);
  WeightStream stream = [&ck](c10::ScalarType dtype, const TensorSink& sink) {
    for_each_checkpoint_tensor(ck, dtype, sink);
  };
  ExportJob job;
  job.kind = ExportKind::Model;
  job.write = [&ck, &o, cfg, stream](const fs::path& dir) {
    return write_model_folder({tensor_sizes_from_layout(ck, cfg.dtype), stream}, cfg, o, checkpoint_tokenizer(ck), dir);
  };
  job.verify = [&o, cfg, stream](const fs::path& dir, const fs::path& shown) {
    ProbeLogits probe;
    auto check = verify_export(stream, cfg, dir, shown, probe);
    if (o.verify == ExportVerify::Transformers) verify_in_transformers(dir, shown, o.python, probe, check);
    return check;
  };
  return job;
}

}  // namespace

fs::path checkpoint_tokenizer(const LoadedCheckpoint& ck) {
  return ck.meta.value("config", nlohmann::json::object()).value("tokenizer", "");
}

ShardedWrite write_model_folder(const ExportWeights& weights, const LlamaConfig& cfg, const ExportOptions& o,
                                const fs::path& run_tokenizer, const fs::path& dir) {
  fs::create_directories(dir);
  ShardedSafetensorsWriter writer(dir, weights.sizes, o.max_shard_bytes);
  weights.stream(cfg.dtype, [&](const std::string& name, const at::Tensor& t) { writer.add(name, t); });
  auto written = writer.finish();
  write_hf_config(dir / "config.json", cfg);
  write_generation_config(dir, cfg);
  const fs::path tok = o.tokenizer.empty() ? run_tokenizer : o.tokenizer;
  if (!tok.empty()) copy_tokenizer_files(tok, dir);
  if (!o.chat_template.empty()) {
    auto tmpl = make_template(o.chat_template);
    write_chat_template_files(dir, o.chat_template, tmpl->jinja(), tmpl->added_tokens(), cfg.vocab_size);
  }
  return written;
}

ExportResult export_checkpoint(const ExportOptions& o) {
  ExportResult r;
  r.checkpoint_dir = resolve_checkpoint(o.checkpoint);
  auto ck = open_checkpoint(r.checkpoint_dir);
  r.step = ck.step;
  auto job = checkpoint_has_adapters(ck) ? plan_adapter_export(ck, o) : plan_model_export(ck, o);
  r.kind = job.kind;
  r.dtype = o.dtype.value_or(job.kind == ExportKind::AdapterFolder ? at::kFloat : at::kBFloat16);

  const fs::path out = o.out.filename().empty() ? o.out.parent_path() : o.out;  // "dir/" names dir
  check_destination(out);
  if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
  remove_dead_temporaries(out);
  TempFolder tmp{out.parent_path() / (temp_prefix(out) + std::to_string(getpid()))};
  fs::remove_all(tmp.path);

  auto written = job.write(tmp.path);
  r.files = written.files.size();
  r.bytes = written.total_bytes;
  corrupt_for_test(tmp.path);
  if (o.verify != ExportVerify::None) r.check = job.verify(tmp.path, out);
  publish(tmp.path, out);
  tmp.keep = true;
  return r;
}

}  // namespace agenttune
