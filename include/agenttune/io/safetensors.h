#pragma once
// The safetensors format (8-byte little-endian header length, JSON header, raw C-order bytes),
// read through a memory map with no copy until a tensor is used, and written atomically, sharded
// the way Hugging Face shards (model-0000K-of-0000N.safetensors + model.safetensors.index.json).
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agenttune/io/file_digest.h"
#include "agenttune/io/tensor_source.h"

namespace agenttune {

class MappedFile;

struct SafetensorsEntry {
  std::string name;
  std::string dtype_tag;  // as written in the header: "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data section; end is exclusive
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates the header (size, JSON, offsets inside the file, no overlaps, byte counts
  // matching dtype x shape). Throws agenttune::Error naming the file and the tensor at fault.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const;
  const std::vector<SafetensorsEntry>& entries() const;  // in data-offset order
  const SafetensorsEntry* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const;
  // A CPU tensor viewing the mapped bytes (zero copy; keeps the map alive). F32, F16 and BF16
  // only: other dtypes throw an error naming the file, the tensor and the dtype.
  at::Tensor tensor(const std::string& name) const;
  // The same for every dtype write_safetensors writes (floats, integers, bool): a training
  // checkpoint also holds counters and RNG bytes, which a model never does.
  at::Tensor any_tensor(const std::string& name) const;

 private:
  const SafetensorsEntry& entry(const std::string& name) const;  // or an error naming the file
  at::Tensor view(const SafetensorsEntry& e, c10::ScalarType dtype) const;
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// Writes one safetensors file atomically (temp file, fsync, rename). Tensors are written
// contiguous, widest element size first (stable), so every tensor's bytes stay aligned. `metadata` always gets "format": "pt".
// Returns the digest of the bytes written (computed while writing).
FileDigest write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                             std::map<std::string, std::string> metadata = {});

struct ShardedWrite {
  std::vector<std::filesystem::path> files;
  uint64_t total_bytes = 0;  // tensor bytes, as in the index's metadata.total_size
};

// Writes `tensors` into `dir` in HF layout: a single `model.safetensors` when they fit in
// `max_shard_bytes` (0 = no limit), else `model-0000K-of-0000N.safetensors` files of at most
// that size (a tensor larger than the limit gets a shard of its own) plus
// `model.safetensors.index.json` {"metadata": {"total_size": N}, "weight_map": {...}}.
ShardedWrite write_sharded_safetensors(const std::filesystem::path& dir, const NamedTensors& tensors,
                                       uint64_t max_shard_bytes);

struct TensorSize {
  std::string name;
  uint64_t bytes = 0;
};

// The same HF layout written as tensors arrive, in a planned order: each shard file is written as
// soon as its last tensor is added, so only one shard's tensors are ever held (export streams a
// sharded checkpoint this way without assembling the model).
class ShardedSafetensorsWriter {
 public:
  ShardedSafetensorsWriter(std::filesystem::path dir, const std::vector<TensorSize>& plan, uint64_t max_shard_bytes);
  void add(const std::string& name, const at::Tensor& t);  // in plan order
  ShardedWrite finish();                                    // the index (if sharded) and cleanup

 private:
  std::string file_name(size_t shard) const;
  std::filesystem::path dir_;
  std::vector<std::string> names_;
  std::vector<size_t> shard_of_;
  size_t shards_ = 1, next_ = 0;
  uint64_t total_ = 0;
  NamedTensors pending_;
  std::vector<std::pair<std::string, std::string>> weight_map_;
  ShardedWrite result_;
};

// The weights of a HF folder stored as safetensors: `model.safetensors.index.json` if present,
// else `model.safetensors`. Throws if neither exists or the index names a missing file.
std::unique_ptr<TensorSource> open_safetensors_dir(const std::filesystem::path& dir);

}  // namespace agenttune
