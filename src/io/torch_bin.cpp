// torch.save checkpoints. The zip container stores each storage as an uncompressed, 64-byte
// aligned record, so storages are handed to LibTorch's unpickler as views into a read-only map of
// the file (no copy, no whole-file buffer); compressed records fall back to a copy.
#include "agenttune/io/torch_bin.h"
#include "agenttune/io/json_file.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/strings.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

uint16_t read_u16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// The record's bytes inside the map when it is stored uncompressed, else nullptr.
const std::byte* stored_record(const MappedFile& map, caffe2::serialize::PyTorchStreamReader& r,
                               const std::string& name, size_t size) {
  size_t header = r.getRecordHeaderOffset(name);
  size_t data = r.getRecordOffset(name);
  // Local file header: signature PK\3\4, compression method at byte 8 (0 = stored).
  if (header + 30 > map.size() || data > map.size() || size > map.size() - data) return nullptr;
  const std::byte* h = map.data() + header;
  if (std::memcmp(h, "PK\x03\x04", 4) != 0 || read_u16(h + 8) != 0) return nullptr;
  return map.data() + data;
}

// LibTorch's unpickler turns `collections.OrderedDict` into None (it only expects one as a
// tensor's backward-hooks argument) and has no POP opcode, so a real module.state_dict() -- an
// OrderedDict whose `_metadata` attribute a final BUILD restores -- would load as None. Rewrite
// the standard protocol-2 shape torch.save emits: the top-level OrderedDict() becomes `{}`, the
// `_metadata` state and its BUILD are cut, and the hooks' `OrderedDict()` (BINGET 0, EMPTY_TUPLE,
// REDUCE) become None directly, as LibTorch would have made them. Other pickles pass unchanged.
void patch_ordered_dict(std::string& pkl) {
  using namespace std::string_literals;
  const std::string head = "\x80\x02" "ccollections\nOrderedDict\nq\x00)Rq\x01"s;
  if (!pkl.starts_with(head) || !pkl.ends_with("b.")) return;
  // The state is `{` BINPUT n `'_metadata'`...: find where it starts and cut it with its BUILD.
  size_t md = pkl.rfind("X\x09\x00\x00\x00_metadata"s);
  if (md == std::string::npos || md < head.size() + 3 || pkl[md - 3] != '}' || pkl[md - 2] != 'q')
    return;
  pkl.resize(md - 3);
  pkl += '.';
  pkl.replace(0, head.size(), "\x80\x02}q\x01"s);
  const std::string hooks = "h\x00)R"s;
  for (size_t at = pkl.find(hooks); at != std::string::npos; at = pkl.find(hooks, at + 1))
    pkl.replace(at, hooks.size(), "N");
}

// Elements a tensor reaches in its storage (0 for an empty tensor).
uint64_t extent_bytes(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  uint64_t last = static_cast<uint64_t>(t.storage_offset());
  for (int64_t d = 0; d < t.dim(); ++d)
    last += static_cast<uint64_t>(t.size(d) - 1) * static_cast<uint64_t>(t.stride(d));
  return (last + 1) * t.element_size();
}

// The result is read-only memory: callers that modify a tensor in place must clone() it first.
NamedTensors load_state_dict_impl(const fs::path& path) {
  const std::string file = path.string();
  auto map = MappedFile::open(path);
  if (map->size() < 4 || std::memcmp(map->data(), "PK\x03\x04", 4) != 0)
    fail("{}: not a torch.save zip checkpoint (legacy pre-1.6 pickles are not supported; re-save "
         "it with a recent torch.save or convert it to safetensors)",
         file);
  c10::IValue value;
  std::unordered_map<const void*, size_t> record_bytes;  // storage pointer -> bytes on disk
  try {
    caffe2::serialize::PyTorchStreamReader reader(file);
    auto [pkl_ptr, pkl_size] = reader.getRecord("data.pkl");
    std::string pkl(static_cast<const char*>(pkl_ptr.get()), pkl_size);
    patch_ordered_dict(pkl);
    size_t pos = 0;
    auto read = [&](char* buf, size_t n) {
      n = std::min(n, pkl.size() - pos);
      std::memcpy(buf, pkl.data() + pos, n);
      pos += n;
      return n;
    };
    auto read_record = [&](const std::string& key) -> at::DataPtr {
      const std::string rec = "data/" + key;
      size_t size = reader.getRecordSize(rec);
      at::DataPtr ptr;
      if (const std::byte* bytes = stored_record(*map, reader, rec, size)) {
        ptr = at::DataPtr(const_cast<std::byte*>(bytes), new std::shared_ptr<MappedFile>(map),
                          [](void* ctx) { delete static_cast<std::shared_ptr<MappedFile>*>(ctx); },
                          at::Device(at::kCPU));
      } else {
        ptr = std::move(std::get<0>(reader.getRecord(rec)));  // compressed: inflate a copy
      }
      record_bytes[ptr.get()] = size;
      return ptr;
    };
    torch::jit::Unpickler unpickler(read, nullptr, nullptr, read_record, at::Device(at::kCPU));
    unpickler.set_version(reader.version());
    value = unpickler.parse_ivalue();
  } catch (const c10::Error& ex) {
    fail("{}: cannot read torch.save checkpoint: {}", file, ex.what_without_backtrace());
  } catch (const std::exception& ex) {
    fail("{}: cannot read torch.save checkpoint: {}", file, ex.what());
  }
  // The unpickler trusts the pickle's sizes; a tensor reaching past its record would read
  // outside the file's bytes, so check before anyone touches the data.
  auto check = [&](const std::string& name, const at::Tensor& t) {
    auto it = record_bytes.find(t.storage().data());
    uint64_t have = it == record_bytes.end() ? 0 : it->second;
    if (extent_bytes(t) > have)
      fail("{}: tensor '{}' needs {} bytes of its storage but the file holds {}", file, name,
           extent_bytes(t), have);
  };
  if (!value.isGenericDict())
    fail("{}: expected a state dict (str -> Tensor), found {}", file, value.tagKind());

  NamedTensors out;
  for (const auto& kv : value.toGenericDict()) {
    if (!kv.key().isString())
      fail("{}: state dict has a non-string key ({})", file, kv.key().tagKind());
    // Non-tensor entries (step counters, config blobs) are not weights; skip rather than refuse.
    if (!kv.value().isTensor()) continue;
    check(kv.key().toStringRef(), kv.value().toTensor());
    out.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
  }
  return out;
}

bool model_dtype(c10::ScalarType t) {
  return t == c10::ScalarType::Float || t == c10::ScalarType::Half ||
         t == c10::ScalarType::BFloat16;
}

class TorchBinDir final : public TensorSource {
 public:
  explicit TorchBinDir(fs::path dir) : dir_(std::move(dir)) {
    const fs::path index_path = dir_ / "pytorch_model.bin.index.json";
    if (fs::exists(index_path)) {
      for (const auto& [tensor, path] : read_weight_index(index_path)) {
        file_of_[tensor] = path.string();
        names_.push_back(tensor);
      }
    } else if (fs::exists(dir_ / "pytorch_model.bin")) {
      std::string p = (dir_ / "pytorch_model.bin").string();
      for (auto& [name, t] : shard(p)) {
        file_of_[name] = p;
        names_.push_back(name);
      }
      std::sort(names_.begin(), names_.end());
    } else {
      fail("{}: no pytorch_model.bin or pytorch_model.bin.index.json found", dir_.string());
    }
  }

  std::vector<std::string> names() const override { return names_; }
  bool contains(const std::string& name) const override { return file_of_.count(name) > 0; }
  std::string where(const std::string& name) const override {
    auto it = file_of_.find(name);
    return it == file_of_.end() ? dir_.string() : it->second;
  }

  at::Tensor get(const std::string& name) const override {
    auto it = file_of_.find(name);
    if (it == file_of_.end()) {
      std::string near = nearest(name, names_);
      fail("{}: no tensor named '{}'{}", dir_.string(), name,
           near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near));
    }
    const auto& tensors = shard(it->second);
    auto t = tensors.find(name);
    if (t == tensors.end())
      fail("{}: the index maps tensor '{}' to this file, but it does not contain it", it->second,
           name);
    if (!model_dtype(t->second.scalar_type()))
      fail("{}: tensor '{}' has dtype {}; only float32, float16 and bfloat16 are supported",
           it->second, name, c10::toString(t->second.scalar_type()));
    return t->second;
  }

 private:
  using Shard = std::unordered_map<std::string, at::Tensor>;
  const Shard& shard(const std::string& file) const {
    std::lock_guard lock(mu_);
    auto it = loaded_.find(file);
    if (it != loaded_.end()) return it->second;
    Shard s;
    for (auto& [n, t] : load_state_dict_impl(file)) s.emplace(n, std::move(t));
    return loaded_.emplace(file, std::move(s)).first->second;
  }

  fs::path dir_;
  std::unordered_map<std::string, std::string> file_of_;
  std::vector<std::string> names_;
  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, Shard> loaded_;  // node-based: references stay valid
};

}  // namespace

NamedTensors load_torch_state_dict(const fs::path& path) { return load_state_dict_impl(path); }

std::unique_ptr<TensorSource> open_torch_bin_dir(const fs::path& dir) {
  return std::make_unique<TorchBinDir>(dir);
}

}  // namespace agenttune
