// Safetensors reading: the header is validated completely on open (the format's safety promise
// is only as good as that check), tensors are views into a private read-only mapping.
#include "agenttune/io/safetensors.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "safetensors_dtype.h"

namespace agenttune {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; a big-endian host would need byte swaps");

namespace {

// Same limit as the reference Rust implementation: a bigger header is an attack, not a model.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

using nlohmann::json;

SafetensorsEntry parse_entry(const std::string& file, const std::string& name, const json& v) {
  if (!v.is_object()) fail("{}: tensor '{}': header entry is not a JSON object", file, name);
  SafetensorsEntry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) fail("{}: tensor '{}': missing string 'dtype'", file, name);
  e.dtype_tag = dt->get<std::string>();
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) fail("{}: tensor '{}': missing array 'shape'", file, name);
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned() ||
        d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("{}: tensor '{}': shape {} has an entry that is not a non-negative integer", file, name,
           sh->dump());
    e.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    fail("{}: tensor '{}': 'data_offsets' must be [begin, end] of non-negative integers", file,
         name);
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.end < e.begin)
    fail("{}: tensor '{}': data_offsets [{}, {}] end before begin", file, name, e.begin, e.end);

  // numel * element size, refusing to wrap around: a wrapped product could "match" the offsets.
  size_t elem = safetensors_elem_size(e.dtype_tag);
  if (elem == 0) return e;  // unknown dtype: offsets still checked, tensor() refuses it
  uint64_t bytes = elem;
  for (int64_t d : e.shape) {
    if (d != 0 && bytes > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
      fail("{}: tensor '{}': shape {} is too large", file, name, sh->dump());
    bytes *= static_cast<uint64_t>(d);
  }
  if (bytes != e.end - e.begin)
    fail("{}: tensor '{}': {} x shape {} needs {} bytes but data_offsets [{}, {}] hold {}", file,
         name, e.dtype_tag, sh->dump(), bytes, e.begin, e.end, e.end - e.begin);
  return e;
}

}  // namespace

struct SafetensorsFile::Impl {
  std::filesystem::path path;
  std::shared_ptr<MappedFile> map;
  uint64_t data_start = 0;  // 8 + header length
  std::vector<SafetensorsEntry> entries;
  std::unordered_map<std::string, size_t> by_name;
  std::map<std::string, std::string> metadata;
};

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  impl->map = MappedFile::open(path);
  const std::string file = path.string();
  const auto size = static_cast<uint64_t>(impl->map->size());
  if (size < 8) fail("{}: not a safetensors file: {} bytes, shorter than the 8-byte header length", file, size);

  uint64_t header_len = 0;
  std::memcpy(&header_len, impl->map->data(), 8);
  if (header_len > kMaxHeaderBytes)
    fail("{}: safetensors header length {} exceeds the {} byte limit (corrupt or not safetensors)",
         file, header_len, kMaxHeaderBytes);
  if (header_len > size - 8)
    fail("{}: safetensors header length {} runs past the end of the {} byte file (truncated?)", file,
         header_len, size);
  impl->data_start = 8 + header_len;
  const uint64_t data_size = size - impl->data_start;

  json header;
  try {
    const auto* p = reinterpret_cast<const char*>(impl->map->data()) + 8;
    header = json::parse(p, p + header_len);
  } catch (const json::exception& ex) {
    fail("{}: safetensors header is not valid JSON: {}", file, ex.what());
  }
  if (!header.is_object()) fail("{}: safetensors header is not a JSON object", file);

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail("{}: '__metadata__' is not a JSON object", file);
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) fail("{}: '__metadata__' value for '{}' is not a string", file, mk);
        impl->metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    impl->entries.push_back(parse_entry(file, key, value));
  }

  // The tensors must tile the data section exactly: a hole or an overlap means a corrupt header.
  std::stable_sort(impl->entries.begin(), impl->entries.end(),
                   [](const auto& a, const auto& b) {
                     return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                   });
  uint64_t expected = 0;
  for (const auto& e : impl->entries) {
    if (e.begin < expected)
      fail("{}: tensor '{}': data_offsets [{}, {}] overlap the previous tensor (ends at {})", file,
           e.name, e.begin, e.end, expected);
    if (e.begin > expected)
      fail("{}: tensor '{}': data_offsets [{}, {}] leave a hole after byte {}", file, e.name,
           e.begin, e.end, expected);
    if (e.end > data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}] run past the {} byte data section (truncated "
           "file?)",
           file, e.name, e.begin, e.end, data_size);
    expected = e.end;
  }
  if (expected != data_size)
    fail("{}: {} trailing bytes after the last tensor (data section is {} bytes, tensors cover {})",
         file, data_size - expected, data_size, expected);

  for (size_t i = 0; i < impl->entries.size(); ++i) impl->by_name.emplace(impl->entries[i].name, i);
  SafetensorsFile f;
  f.impl_ = std::move(impl);
  return f;
}

const std::filesystem::path& SafetensorsFile::path() const { return impl_->path; }
const std::vector<SafetensorsEntry>& SafetensorsFile::entries() const { return impl_->entries; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const {
  return impl_->metadata;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = impl_->by_name.find(name);
  return it == impl_->by_name.end() ? nullptr : &impl_->entries[it->second];
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  auto st = safetensors_model_dtype(e.dtype_tag);
  if (!st)
    fail("{}: tensor '{}' has dtype {}; only F32, F16 and BF16 are supported", impl_->path.string(),
         name, e.dtype_tag);
  return view(e, *st);
}

at::Tensor SafetensorsFile::any_tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  auto st = safetensors_written_dtype(e.dtype_tag);
  if (!st) fail("{}: tensor '{}' has unsupported dtype {}", impl_->path.string(), name, e.dtype_tag);
  return view(e, *st);
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (e == nullptr) fail("{}: no tensor named '{}'", impl_->path.string(), name);
  return *e;
}

// The returned tensor aliases PROT_READ memory: writing into it in place faults (SIGSEGV).
// Callers that mutate must clone() first; the model loader copies into its own parameters.
at::Tensor SafetensorsFile::view(const SafetensorsEntry& e, c10::ScalarType st) const {
  auto options = at::TensorOptions().dtype(st).device(at::kCPU);
  if (e.begin == e.end) return at::empty(e.shape, options);

  // from_blob wants void*; the const_cast is safe only because nothing writes (see above).
  auto* ptr = const_cast<std::byte*>(impl_->map->data() + impl_->data_start + e.begin);
  // Headers from other writers need not keep data aligned and kernels may assume alignment, so a
  // misaligned tensor gets its own aligned copy (memcpy: no typed load of the misaligned bytes).
  if (reinterpret_cast<uintptr_t>(ptr) % at::elementSize(st) != 0) {
    at::Tensor copy = at::empty(e.shape, options);
    std::memcpy(copy.data_ptr(), ptr, e.end - e.begin);
    return copy;
  }
  return at::from_blob(ptr, e.shape, [map = impl_->map](void*) {}, options);
}

}  // namespace agenttune
