// Safetensors writing (single file and HF-style shards) and the HF folder TensorSource.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <unordered_map>

#include "agenttune/io/safetensors.h"
#include "agenttune/io/json_file.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/strings.h"
#include "safetensors_dtype.h"

namespace agenttune {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// Streams straight to the temp file so a multi-GB shard never exists as one in-memory string.
class AtomicWriter {
 public:
  explicit AtomicWriter(fs::path path) : path_(std::move(path)) {
    tmp_ = path_;
    tmp_ += ".tmp." + std::to_string(::getpid());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("{}: cannot create: {}", tmp_.string(), std::strerror(errno));
  }
  ~AtomicWriter() {
    if (fd_ >= 0) {
      ::close(fd_);
      std::error_code ec;
      fs::remove(tmp_, ec);  // a failed write leaves no half file behind
    }
  }
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t k = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
      if (k < 0) {
        if (errno == EINTR) continue;
        fail("{}: write failed: {}", tmp_.string(), std::strerror(errno));
      }
      digest_.update(p, static_cast<size_t>(k));
      p += k;
      n -= static_cast<size_t>(k);
    }
  }
  // Of every byte written so far: the file's digest once committed, with no second read.
  FileDigest digest() const { return digest_.result(); }
  void commit() {
    if (::fsync(fd_) != 0) fail("{}: fsync failed: {}", tmp_.string(), std::strerror(errno));
    int rc = ::close(fd_);
    const int close_errno = errno;  // before fs::remove, which may set it again
    fd_ = -1;
    if (rc != 0) {
      std::error_code ec;
      fs::remove(tmp_, ec);
      fail("{}: close failed: {}", tmp_.string(), std::strerror(close_errno));
    }
    std::error_code ec;
    fs::rename(tmp_, path_, ec);
    if (ec) {
      fs::remove(tmp_, ec);
      fail("{}: cannot rename into place: {}", path_.string(), ec.message());
    }
    fsync_dir(path_.has_parent_path() ? path_.parent_path() : fs::path("."));
  }

 private:
  fs::path path_, tmp_;
  int fd_ = -1;
  DigestBuilder digest_;
};

uint64_t tensor_bytes(const at::Tensor& t) {
  return static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(t.element_size());
}

}  // namespace

FileDigest write_safetensors(const fs::path& path, const NamedTensors& tensors,
                             std::map<std::string, std::string> metadata) {
  metadata["format"] = "pt";
  // Widest elements first (stable, so same-width tensors keep the caller's order): every tensor
  // then starts aligned to its element size without padding, as the reference writer ensures.
  std::vector<const std::pair<std::string, at::Tensor>*> order;
  std::set<std::string> seen;
  for (const auto& nt : tensors) {
    if (nt.first.empty() || nt.first == "__metadata__")
      fail("{}: invalid tensor name '{}'", path.string(), nt.first);
    if (!seen.insert(nt.first).second)
      fail("{}: tensor '{}' given twice", path.string(), nt.first);
    if (!nt.second.defined()) fail("{}: tensor '{}' is undefined", path.string(), nt.first);
    if (safetensors_tag(nt.second.scalar_type()).empty())
      fail("{}: tensor '{}' has dtype {}, which safetensors writing does not support",
           path.string(), nt.first, c10::toString(nt.second.scalar_type()));
    order.push_back(&nt);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return a->second.element_size() > b->second.element_size();
  });

  ordered_json header = ordered_json::object();
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* nt : order) {
    const at::Tensor& t = nt->second;
    uint64_t n = tensor_bytes(t);
    header[nt->first] = {{"dtype", safetensors_tag(t.scalar_type())},
                         {"shape", t.sizes().vec()},
                         {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned

  AtomicWriter out(path);
  uint64_t len = text.size();
  out.write(&len, 8);
  out.write(text.data(), text.size());
  for (const auto* nt : order) {
    // One tensor at a time: at most one temporary CPU/contiguous copy alive.
    at::Tensor t = nt->second.cpu().contiguous();
    if (t.numel() > 0) out.write(t.data_ptr(), tensor_bytes(t));
  }
  out.commit();
  return out.digest();
}

ShardedSafetensorsWriter::ShardedSafetensorsWriter(fs::path dir, const std::vector<TensorSize>& plan,
                                                   uint64_t max_shard_bytes)
    : dir_(std::move(dir)) {
  fs::create_directories(dir_);
  // Greedy in the caller's order, like transformers: the limit counts tensor bytes, not headers.
  uint64_t current = 0;
  size_t shard = 0;
  for (const auto& t : plan) {
    if (max_shard_bytes > 0 && current > 0 && current + t.bytes > max_shard_bytes) ++shard, current = 0;
    shard_of_.push_back(shard);
    names_.push_back(t.name);
    current += t.bytes;
    total_ += t.bytes;
  }
  shards_ = plan.empty() ? 1 : shard + 1;
}

std::string ShardedSafetensorsWriter::file_name(size_t shard) const {
  return shards_ == 1 ? std::string(kSingleFile) : fmt::format("model-{:05d}-of-{:05d}.safetensors", shard + 1, shards_);
}

void ShardedSafetensorsWriter::add(const std::string& name, const at::Tensor& t) {
  if (next_ >= names_.size() || names_[next_] != name)
    fail("{}: tensor '{}' added out of the planned order", dir_.string(), name);
  pending_.emplace_back(name, t.contiguous());
  size_t shard = shard_of_[next_++];
  // A shard is complete when the next planned tensor belongs to another one (or none is left).
  if (next_ == names_.size() || shard_of_[next_] != shard) {
    result_.files.push_back(dir_ / file_name(shard));
    write_safetensors(result_.files.back(), pending_);
    for (const auto& nt : pending_) weight_map_.emplace_back(nt.first, file_name(shard));
    pending_.clear();
  }
}

ShardedWrite ShardedSafetensorsWriter::finish() {
  if (next_ != names_.size())
    fail("{}: {} of {} planned tensors were written", dir_.string(), next_, names_.size());
  if (names_.empty()) write_safetensors(dir_ / kSingleFile, {}), result_.files.push_back(dir_ / kSingleFile);
  result_.total_bytes = total_;
  std::set<std::string> keep;
  for (const auto& f : result_.files) keep.insert(f.filename().string());
  if (shards_ > 1) {
    ordered_json weight_map = ordered_json::object();
    for (const auto& [n, f] : weight_map_) weight_map[n] = f;
    ordered_json index = {{"metadata", {{"total_size", total_}}}, {"weight_map", weight_map}};
    write_file_atomic(dir_ / kIndexFile, index.dump(2) + "\n");  // last: it commits the set
    keep.insert(kIndexFile);
  }
  // Leftovers of an earlier save with another shard count would shadow or confuse the new one
  // (a stale index wins over a fresh model.safetensors), so they go once the new set is in place.
  for (const auto& entry : fs::directory_iterator(dir_)) {
    std::string name = entry.path().filename().string();
    bool ours = name == kSingleFile || name == kIndexFile ||
                (name.starts_with("model-") && name.ends_with(".safetensors") && name.find("-of-") != std::string::npos);
    if (ours && !keep.count(name)) fs::remove(entry.path());
  }
  return result_;
}

ShardedWrite write_sharded_safetensors(const fs::path& dir, const NamedTensors& tensors, uint64_t max_shard_bytes) {
  std::vector<TensorSize> plan;
  for (const auto& [name, t] : tensors) plan.push_back({name, tensor_bytes(t)});
  ShardedSafetensorsWriter w(dir, plan, max_shard_bytes);
  for (const auto& [name, t] : tensors) w.add(name, t);
  return w.finish();
}

namespace {

class SafetensorsDir final : public TensorSource {
 public:
  explicit SafetensorsDir(fs::path dir) : dir_(std::move(dir)) {
    if (fs::exists(dir_ / kIndexFile)) {
      open_index();
    } else if (fs::exists(dir_ / kSingleFile)) {
      files_.push_back(SafetensorsFile::open(dir_ / kSingleFile));
      for (const auto& e : files_[0].entries()) add(e.name, 0);
      std::sort(names_.begin(), names_.end());
    } else {
      fail("{}: no {} or {} found", dir_.string(), kSingleFile, kIndexFile);
    }
  }

  std::vector<std::string> names() const override { return names_; }
  bool contains(const std::string& name) const override { return where_.count(name) > 0; }

  at::Tensor get(const std::string& name) const override {
    auto it = where_.find(name);
    if (it == where_.end()) {
      std::string near = nearest(name, names_);
      fail("{}: no tensor named '{}'{}", dir_.string(), name,
           near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near));
    }
    return files_[it->second].tensor(name);
  }

  std::string where(const std::string& name) const override {
    auto it = where_.find(name);
    return it == where_.end() ? dir_.string() : files_[it->second].path().string();
  }

 private:
  void add(const std::string& name, size_t file) {
    where_[name] = file;
    names_.push_back(name);
  }

  void open_index() {
    std::unordered_map<std::string, size_t> file_ids;
    for (const auto& [tensor, path] : read_weight_index(dir_ / kIndexFile)) {
      auto [it, fresh] = file_ids.emplace(path.string(), files_.size());
      if (fresh) files_.push_back(SafetensorsFile::open(path));
      if (files_[it->second].find(tensor) == nullptr)
        fail("{}: the index maps tensor '{}' to this file, but it does not contain it",
             files_[it->second].path().string(), tensor);
      add(tensor, it->second);
    }
  }

  fs::path dir_;
  std::vector<SafetensorsFile> files_;
  std::unordered_map<std::string, size_t> where_;
  std::vector<std::string> names_;  // sorted: the index's JSON keys come out sorted too
};

}  // namespace

std::unique_ptr<TensorSource> open_safetensors_dir(const fs::path& dir) {
  return std::make_unique<SafetensorsDir>(dir);
}

}  // namespace agenttune
