// Crash-safe training checkpoints: temp folder -> fsync -> rename -> `latest` -> prune.
#include "agenttune/train/checkpoint_store.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <cctype>
#include <cstdio>
#include <vector>

#include "agenttune/io/file_digest.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/log.h"

namespace agenttune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kComplete = "COMPLETE";
constexpr const char* kMeta = "meta.json";
constexpr const char* kLatest = "latest";
constexpr std::string_view kStepPrefix = "step_";
constexpr std::string_view kTmpPrefix = ".tmp_step_";

// The step in "<prefix>00001000" (rest empty) or "<prefix>00001000_<anything>" (allow_suffix).
// Anything else is not ours, and the store never touches it.
std::optional<int64_t> parse_step(std::string_view name, std::string_view prefix, bool allow_suffix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  size_t n = 0;
  while (n < name.size() && std::isdigit(static_cast<unsigned char>(name[n]))) ++n;
  if (n < 8 || n > 18) return std::nullopt;
  if (n < name.size() && !(allow_suffix && name[n] == '_')) return std::nullopt;
  return std::stoll(std::string(name.substr(0, n)));
}

bool is_complete(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kComplete, ec);
}

// Complete checkpoints under root, oldest step first.
std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    auto step = parse_step(e.path().filename().string(), kStepPrefix, false);
    if (step && e.is_directory(ec) && is_complete(e.path())) out.emplace_back(*step, e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) log::warn("{}: cannot remove: {}", p.string(), ec.message());
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) fail("{}: cannot rename to {}: {}", from.string(), to.string(), ec.message());
}

[[noreturn]] void rethrow_as_error(const std::exception& e, const fs::path& root) {
  if (dynamic_cast<const Error*>(&e)) throw Error(e.what());
  fail("{}: checkpoint save failed: {}", root.string(), e.what());
}

fs::path digest_sidecar(const fs::path& rank_file) {
  fs::path p = rank_file;
  p += ".digest";
  return p;
}

FileDigest read_digest_sidecar(const fs::path& sidecar) {
  json j = json::parse(read_text_file(sidecar), nullptr, false);
  return FileDigest::from_json(j, sidecar.string());
}

// The per-file digests COMPLETE records; none for checkpoints saved before digests existed
// (their COMPLETE holds just the step), which still load, with a warning.
std::optional<std::map<std::string, FileDigest>> read_complete_digests(const fs::path& dir) {
  const fs::path path = dir / kComplete;
  json j = json::parse(read_text_file(path), nullptr, false);
  if (j.is_number_integer()) {
    log::warn("{}: no file digests (saved by an older agenttune): its files cannot be verified", path.string());
    return std::nullopt;
  }
  if (!j.is_object() || !j.contains("files") || !j["files"].is_object())
    fail("{}: expected {{\"step\": N, \"files\": {{name: digest}}}}; the marker is damaged", path.string());
  std::map<std::string, FileDigest> out;
  for (const auto& [name, d] : j["files"].items()) out.emplace(name, FileDigest::from_json(d, path.string()));
  return out;
}

void verify_digest(const fs::path& file, const FileDigest& actual, const std::map<std::string, FileDigest>& expected) {
  const std::string name = file.filename().string();
  auto it = expected.find(name);
  if (it == expected.end())
    fail("{}: {} records no digest for this file; the checkpoint is damaged", file.string(), kComplete);
  if (it->second != actual)
    fail("{}: corrupt: {} records {}, the file has {} (resume from an older checkpoint with --resume DIR)",
         file.string(), kComplete, it->second.to_string(), actual.to_string());
}

// A rank file through io's reader, every dtype the writer emits (integer state included).
class RankTensors final : public TensorSource {
 public:
  explicit RankTensors(const fs::path& path) : file_(SafetensorsFile::open(path)) {
    for (const auto& e : file_.entries()) names_.push_back(e.name);
    std::sort(names_.begin(), names_.end());
  }
  std::vector<std::string> names() const override { return names_; }
  bool contains(const std::string& name) const override { return file_.find(name) != nullptr; }
  std::string where(const std::string&) const override { return file_.path().string(); }
  at::Tensor get(const std::string& name) const override { return file_.any_tensor(name); }

 private:
  SafetensorsFile file_;
  std::vector<std::string> names_;
};

}  // namespace

CheckpointStore::CheckpointStore(fs::path root, int keep_last)
    : root_(std::move(root)), keep_last_(keep_last) {}

std::string CheckpointStore::folder_name(int64_t step) { return fmt::format("step_{:08d}", step); }
std::string CheckpointStore::rank_file_name(int rank) {
  return fmt::format("rank_{:05d}.safetensors", rank);
}

fs::path CheckpointStore::save(const CheckpointWrite& w) {
  if (w.world_size != 1 || w.rank != 0)
    fail("{}: save() is for a single process; rank {} of {} must use stage() and commit()",
         root_.string(), w.rank, w.world_size);
  if (w.step < 0) fail("{}: cannot save negative step {}", root_.string(), w.step);
  // The pid keeps a concurrent leftover of a killed run from being mistaken for ours.
  fs::path tmp = root_ / fmt::format("{}{:08d}_{}", kTmpPrefix, w.step, ::getpid());
  try {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    FileDigest d = write_safetensors(tmp / rank_file_name(0), w.tensors, {{"step", std::to_string(w.step)}});
    return finish(tmp, w.step, w.meta, {d});
  } catch (const std::exception& e) {
    remove_quietly(tmp);  // a failed save (full disk, ...) leaves nothing behind
    rethrow_as_error(e, root_);
  }
}

fs::path CheckpointStore::stage(const CheckpointWrite& w) {
  if (w.world_size < 1 || w.rank < 0 || w.rank >= w.world_size)
    fail("{}: invalid rank {} of world size {}", root_.string(), w.rank, w.world_size);
  if (w.step < 0) fail("{}: cannot save negative step {}", root_.string(), w.step);
  // Named by step alone so every rank, in any process, writes into the same folder.
  fs::path tmp = root_ / fmt::format("{}{:08d}", kTmpPrefix, w.step);
  fs::path file = tmp / rank_file_name(w.rank);
  fs::path sidecar = digest_sidecar(file);
  try {
    fs::create_directories(tmp);
    FileDigest d = write_safetensors(
        file, w.tensors, {{"step", std::to_string(w.step)}, {"world_size", std::to_string(w.world_size)}});
    // Rank 0 gathers every rank's digest from these into COMPLETE at commit (no collective needed).
    write_file_atomic(sidecar, d.to_json().dump() + "\n");
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(file, ec);
    fs::remove(sidecar, ec);
    rethrow_as_error(e, root_);
  }
  return file;
}

fs::path CheckpointStore::commit(int64_t step, const json& meta, int world_size) {
  fs::path tmp = root_ / fmt::format("{}{:08d}", kTmpPrefix, step);
  if (!fs::is_directory(tmp)) fail("{}: nothing staged for step {}", tmp.string(), step);
  try {
    std::vector<FileDigest> digests;
    for (int r = 0; r < world_size; ++r) {
      fs::path f = tmp / rank_file_name(r);
      if (!fs::is_regular_file(f) || !fs::is_regular_file(digest_sidecar(f)))
        fail("{}: rank {} of {} has not staged its file (every rank must stage before commit)",
             f.string(), r, world_size);
      // A leftover from an earlier attempt at this step with another world size must not slip in.
      const auto& md = SafetensorsFile::open(f).metadata();
      auto ws = md.find("world_size");
      if (ws == md.end() || ws->second != std::to_string(world_size))
        fail("{}: staged for world size {}, committing {}", f.string(),
             ws == md.end() ? "?" : ws->second, world_size);
      digests.push_back(read_digest_sidecar(digest_sidecar(f)));
    }
    // Only the expected rank files travel into the checkpoint: not partial writes of killed ranks,
    // nor files of ranks beyond this world size, nor the digest sidecars (COMPLETE holds them).
    for (const auto& e : fs::directory_iterator(tmp)) {
      std::string name = e.path().filename().string();
      int r = -1;
      if (std::sscanf(name.c_str(), "rank_%d", &r) != 1 || r >= world_size ||
          name != rank_file_name(r))
        remove_quietly(e.path());
    }
    return finish(tmp, step, meta, digests);
  } catch (const std::exception& e) {
    remove_quietly(tmp);
    rethrow_as_error(e, root_);
  }
}

fs::path CheckpointStore::finish(const fs::path& tmp, int64_t step, const json& meta,
                                 const std::vector<FileDigest>& rank_digests) {
  if (!meta.is_null() && !meta.is_object())
    fail("{}: checkpoint meta must be a JSON object", root_.string());
  const int world_size = static_cast<int>(rank_digests.size());
  json m = meta.is_null() ? json::object() : meta;
  m["step"] = step;
  m["world_size"] = world_size;
  const std::string meta_text = m.dump(2) + "\n";
  write_file_atomic(tmp / kMeta, meta_text);
  // COMPLETE, written last, carries the digest of every other file: a flipped byte anywhere
  // (weights, moments, data cursors in meta.json) is caught at load, naming the file.
  json files = json::object();
  files[kMeta] = digest_of(meta_text).to_json();
  for (int r = 0; r < world_size; ++r) files[rank_file_name(r)] = rank_digests[r].to_json();
  json complete = {{"step", step}, {"files", files}};
  write_file_atomic(tmp / kComplete, complete.dump(2) + "\n");  // fsyncs tmp as well

  set_aside_newer_than(step);
  fs::path dest = root_ / folder_name(step);
  if (fs::exists(dest)) {
    // A resumed run reaching a saved step again: rename() cannot replace a non-empty folder, so
    // the old one moves aside (latest() scans past the gap if killed in between).
    fs::path old = root_ / fmt::format("{}{:08d}_{}_old", kTmpPrefix, step, ::getpid());
    remove_quietly(old);
    rename_or_fail(dest, old);
    rename_or_fail(tmp, dest);
    fsync_dir(root_);
    remove_quietly(old);
  } else {
    rename_or_fail(tmp, dest);
  }
  fsync_dir(root_);
  write_file_atomic(root_ / kLatest, folder_name(step) + "\n");
  prune(step);
  return dest;
}

void CheckpointStore::set_aside_newer_than(int64_t step) const {
  // Newer checkpoints than the one being saved belong to a timeline this run left (it resumed from
  // an older checkpoint, or started afresh): kept for the user, but out of resume's reach.
  for (const auto& [s, path] : complete_checkpoints(root_)) {
    if (s <= step) continue;
    fs::path aside = root_ / ("abandoned_" + folder_name(s));
    if (fs::exists(aside)) aside += fmt::format("_{}", ::getpid());
    rename_or_fail(path, aside);
    fsync_dir(root_);
    log::warn("{}: newer than the step {} this run saves, so it belongs to an abandoned run; moved to {} (delete "
              "it when no longer needed)",
              path.string(), step, aside.filename().string());
  }
}

void CheckpointStore::prune(int64_t just_written) const {
  if (keep_last_ > 0) {
    auto all = complete_checkpoints(root_);
    size_t excess = all.size() > static_cast<size_t>(keep_last_) ? all.size() - keep_last_ : 0;
    for (size_t i = 0; i < excess; ++i) {
      if (all[i].first == just_written) continue;
      // Renamed out of the store's namespace first: a kill during remove_all would otherwise
      // leave a folder still marked COMPLETE with some of its files gone.
      fs::path doomed = root_ / fmt::format("{}{:08d}_{}_pruned", kTmpPrefix, all[i].first, ::getpid());
      remove_quietly(doomed);
      std::error_code ec;
      fs::rename(all[i].second, doomed, ec);
      if (ec) {
        log::warn("{}: cannot prune: {}", all[i].second.string(), ec.message());
        continue;
      }
      fsync_dir(root_);
      remove_quietly(doomed);
    }
  }
  // Leftovers of killed saves. Only steps up to this one: a later temp folder may be in use.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    std::string name = e.path().filename().string();
    auto tmp_step = parse_step(name, kTmpPrefix, true);
    auto step = parse_step(name, kStepPrefix, false);
    if ((tmp_step && *tmp_step <= just_written) ||
        (step && *step < just_written && !is_complete(e.path())) ||
        name.starts_with(std::string(kLatest) + ".tmp."))
      remove_quietly(e.path());
  }
}

std::optional<fs::path> CheckpointStore::latest() const {
  // By scanning, not through `latest`: a kill between a checkpoint's rename and the pointer's
  // update leaves the pointer one checkpoint behind, and resuming there would redo steps.
  auto all = complete_checkpoints(root_);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

void CheckpointStore::remove_leftovers() const {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_, ec)) {
    std::string name = e.path().filename().string();
    bool tmp = parse_step(name, kTmpPrefix, true).has_value();
    bool incomplete = parse_step(name, kStepPrefix, false) && !is_complete(e.path());
    if (tmp || incomplete || name.starts_with(std::string(kLatest) + ".tmp.")) {
      log::info("checkpoints: removing {} left by an interrupted save", e.path().string());
      remove_quietly(e.path());
    }
  }
}

LoadedCheckpoint open_checkpoint(const fs::path& dir) {
  if (!fs::is_directory(dir)) fail("{}: checkpoint folder not found", dir.string());
  if (!is_complete(dir))
    fail("{}: incomplete checkpoint (no {} marker: its save was interrupted)", dir.string(), kComplete);
  LoadedCheckpoint ck;
  ck.dir = dir;
  ck.digests = read_complete_digests(dir);
  std::string meta_text = read_text_file(dir / kMeta);
  if (ck.digests) verify_digest(dir / kMeta, digest_of(meta_text), *ck.digests);
  try {
    ck.meta = json::parse(meta_text);
  } catch (const json::exception& e) {
    fail("{}: {} is not valid JSON: {}", dir.string(), kMeta, e.what());
  }
  if (!ck.meta.is_object() || !ck.meta.contains("step") || !ck.meta["step"].is_number_integer() ||
      !ck.meta.contains("world_size") || !ck.meta["world_size"].is_number_integer())
    fail("{}: {} lacks integer 'step' and 'world_size'", dir.string(), kMeta);
  ck.step = ck.meta["step"].get<int64_t>();
  ck.world_size = ck.meta["world_size"].get<int>();
  if (ck.world_size < 1) fail("{}: {} has world_size {}", dir.string(), kMeta, ck.world_size);
  for (int r = 0; r < ck.world_size; ++r)
    if (!fs::is_regular_file(dir / CheckpointStore::rank_file_name(r)))
      fail("{}: missing {} (world size {})", dir.string(), CheckpointStore::rank_file_name(r),
           ck.world_size);
  return ck;
}

std::unique_ptr<TensorSource> open_rank_tensors(const fs::path& dir, int rank) {
  fs::path f = dir / CheckpointStore::rank_file_name(rank);
  if (!fs::is_regular_file(f)) fail("{}: no such rank file in the checkpoint", f.string());
  if (auto digests = read_complete_digests(dir)) verify_digest(f, digest_of_file(f), *digests);
  return std::make_unique<RankTensors>(f);
}

}  // namespace agenttune
