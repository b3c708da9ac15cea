#include "agenttune/data/token_shards.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "agenttune/io/json_file.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "manifest_json.h"

namespace agenttune {

namespace fs = std::filesystem;

std::string shard_dtype_for_vocab(int64_t vocab_size) {
  if (vocab_size <= 0) fail("token shards: vocab size must be positive, got {}", vocab_size);
  return vocab_size <= 65536 ? "uint16" : "uint32";
}

// ---------------------------------------------------------------------------------------------
// Manifest

namespace {

template <typename T>
T field(const nlohmann::json& j, const char* key, const fs::path& file, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail("{}: {}missing '{}'", file.string(), where, key);
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: {}'{}' has the wrong type ({})", file.string(), where, key, j.at(key).type_name());
  }
}

}  // namespace

namespace data {

ShardManifest manifest_from_json(const nlohmann::json& j, const fs::path& f) {
  ShardManifest m;
  m.format_version = field<int>(j, "format_version", f, "");
  if (m.format_version != ShardManifest::kFormatVersion)
    fail("{}: format_version {} is not supported (this build reads {})", f.string(), m.format_version,
         ShardManifest::kFormatVersion);
  m.tokenizer_sha256 = field<std::string>(j, "tokenizer_sha256", f, "");
  m.vocab_size = field<int64_t>(j, "vocab_size", f, "");
  m.dtype = field<std::string>(j, "dtype", f, "");
  if (m.dtype != "uint16" && m.dtype != "uint32")
    fail("{}: dtype '{}' is not one of uint16, uint32", f.string(), m.dtype);
  m.documents = field<int64_t>(j, "documents", f, "");
  m.tokens = field<int64_t>(j, "tokens", f, "");
  const auto sources = field<nlohmann::json>(j, "sources", f, "");
  const auto shards = field<nlohmann::json>(j, "shards", f, "");
  if (!sources.is_array() || !shards.is_array()) fail("{}: 'sources' and 'shards' must be arrays", f.string());
  for (size_t i = 0; i < sources.size(); ++i) {
    const auto& s = sources[i];
    const std::string where = fmt::format("sources[{}]: ", i);
    m.sources.push_back({field<std::string>(s, "path", f, where), field<uint64_t>(s, "bytes", f, where),
                         field<std::string>(s, "sha256", f, where), field<int64_t>(s, "documents", f, where),
                         field<int64_t>(s, "tokens", f, where), field<int64_t>(s, "skipped", f, where)});
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    const auto& s = shards[i];
    const std::string where = fmt::format("shards[{}]: ", i);
    ShardEntry e{field<std::string>(s, "name", f, where), field<int64_t>(s, "documents", f, where),
                 field<int64_t>(s, "tokens", f, where)};
    e.trained_tokens = s.contains("trained_tokens") ? field<int64_t>(s, "trained_tokens", f, where) : e.tokens;
    if (s.contains("max_token_id")) e.max_token_id = field<int64_t>(s, "max_token_id", f, where);
    m.shards.push_back(std::move(e));
  }
  // Optional (SFT) keys: absent in pretraining manifests.
  m.has_mask = j.contains("has_mask") && field<bool>(j, "has_mask", f, "");
  m.trained_tokens = j.contains("trained_tokens") ? field<int64_t>(j, "trained_tokens", f, "") : m.tokens;
  if (j.contains("added_tokens")) m.added_tokens = field<std::vector<std::string>>(j, "added_tokens", f, "");
  for (auto& e : m.shards) e.has_mask = m.has_mask;
  return m;
}

nlohmann::ordered_json manifest_to_json(const ShardManifest& m) {
  const auto& [format_version, tokenizer_sha256, vocab_size, dtype, documents, tokens, sources, shards,
               has_mask, trained_tokens, added_tokens] = m;
  nlohmann::ordered_json j;
  j["format_version"] = format_version;
  j["tokenizer_sha256"] = tokenizer_sha256;
  j["vocab_size"] = vocab_size;
  j["dtype"] = dtype;
  j["documents"] = documents;
  j["tokens"] = tokens;
  j["sources"] = nlohmann::ordered_json::array();
  for (const auto& s : sources)
    j["sources"].push_back({{"path", s.path}, {"bytes", s.bytes}, {"sha256", s.sha256},
                            {"documents", s.documents}, {"tokens", s.tokens}, {"skipped", s.skipped}});
  j["shards"] = nlohmann::ordered_json::array();
  for (const auto& s : shards) {
    nlohmann::ordered_json e = {{"name", s.name}, {"documents", s.documents}, {"tokens", s.tokens}};
    if (has_mask) e["trained_tokens"] = s.trained_tokens;
    if (s.max_token_id >= 0) e["max_token_id"] = s.max_token_id;
    j["shards"].push_back(std::move(e));
  }
  if (has_mask) {
    j["has_mask"] = true;
    j["trained_tokens"] = trained_tokens;
  }
  if (!added_tokens.empty()) j["added_tokens"] = added_tokens;
  return j;
}

}  // namespace data

ShardManifest ShardManifest::read(const fs::path& manifest_json) {
  return data::manifest_from_json(read_json_file(manifest_json), manifest_json);
}

void ShardManifest::write(const fs::path& manifest_json) const {
  write_file_atomic(manifest_json, data::manifest_to_json(*this).dump(1) + "\n");
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

class OutFile {
 public:
  explicit OutFile(fs::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("{}: cannot create: {}", path_.string(), std::strerror(errno));
    buf_.reserve(kBuffer);
  }
  ~OutFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  void append(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    if (buf_.size() + n > kBuffer) flush();
    if (n >= kBuffer) return write_all(p, n);
    buf_.insert(buf_.end(), p, p + n);
  }
  void close_synced() {
    flush();
    if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
      fd_ = -1;
      fail("{}: fsync/close failed: {}", path_.string(), std::strerror(errno));
    }
    fd_ = -1;
  }
  const fs::path& path() const { return path_; }

 private:
  static constexpr size_t kBuffer = 1 << 20;
  void flush() {
    write_all(buf_.data(), buf_.size());
    buf_.clear();
  }
  void write_all(const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) fail("{}: write failed: {}", path_.string(), std::strerror(errno));
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  fs::path path_;
  int fd_ = -1;
  std::vector<char> buf_;
};

fs::path partial(const fs::path& p) { return fs::path(p.string() + ".partial"); }

}  // namespace

struct TokenShardWriter::Impl {
  fs::path dir;
  std::string name;
  int64_t vocab = 0;
  bool u16 = true;
  std::unique_ptr<OutFile> bin, idx, mask;
  uint64_t tokens = 0;
  uint64_t trained = 0;
  int64_t documents = 0;
  int64_t max_id = -1;
  bool finished = false;
  std::vector<uint16_t> narrow;
};

TokenShardWriter::TokenShardWriter(const fs::path& dir, std::string name, int64_t vocab_size)
    : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.dir = dir;
  m.name = std::move(name);
  m.vocab = vocab_size;
  m.u16 = shard_dtype_for_vocab(vocab_size) == "uint16";
  m.bin = std::make_unique<OutFile>(partial(dir / (m.name + ".bin")));
  m.idx = std::make_unique<OutFile>(partial(dir / (m.name + ".idx")));
  const uint64_t zero = 0;
  m.idx->append(&zero, sizeof zero);
}

TokenShardWriter::~TokenShardWriter() {
  if (!impl_ || impl_->finished) return;
  std::error_code ec;
  for (auto* f : {&impl_->bin, &impl_->idx, &impl_->mask}) {
    if (!*f) continue;
    fs::path p = (*f)->path();
    f->reset();
    fs::remove(p, ec);
  }
}

void TokenShardWriter::add_document(std::span<const int32_t> tokens, std::span<const uint8_t> mask) {
  auto& m = *impl_;
  if (m.finished) fail("{}: add_document after finish()", m.name);
  for (int32_t t : tokens) {
    if (t < 0 || t >= m.vocab)
      fail("{}: token id {} is outside the vocabulary [0, {})", m.name, t, m.vocab);
    m.max_id = std::max<int64_t>(m.max_id, t);
  }
  if (!mask.empty() && mask.size() != tokens.size())
    fail("{}: document {} has {} tokens but a mask of {}", m.name, m.documents, tokens.size(), mask.size());
  for (uint8_t b : mask)
    if (b > 1) fail("{}: document {} has mask byte {}; masks hold 0 or 1", m.name, m.documents, b);
  if (!mask.empty() && !m.mask) {
    // The first masked document: the ones before it were all trained.
    m.mask = std::make_unique<OutFile>(partial(m.dir / (m.name + ".mask")));
    const std::vector<uint8_t> ones(m.tokens, 1);
    m.mask->append(ones.data(), ones.size());
  }
  if (!mask.empty()) {
    m.mask->append(mask.data(), mask.size());
    m.trained += std::count(mask.begin(), mask.end(), uint8_t{1});
  } else {
    if (m.mask) {
      const std::vector<uint8_t> ones(tokens.size(), 1);
      m.mask->append(ones.data(), ones.size());
    }
    m.trained += tokens.size();
  }
  if (m.u16) {
    m.narrow.assign(tokens.begin(), tokens.end());
    m.bin->append(m.narrow.data(), m.narrow.size() * sizeof(uint16_t));
  } else {
    m.bin->append(tokens.data(), tokens.size() * sizeof(int32_t));  // ids are non-negative
  }
  m.tokens += tokens.size();
  ++m.documents;
  m.idx->append(&m.tokens, sizeof m.tokens);
}

ShardEntry TokenShardWriter::finish() {
  auto& m = *impl_;
  if (m.finished) fail("{}: finish() called twice", m.name);
  m.bin->close_synced();
  m.idx->close_synced();
  if (m.mask) m.mask->close_synced();
  // The .idx lands last: a reader that sees it also sees the matching .bin (and .mask).
  rename_file(m.bin->path(), m.dir / (m.name + ".bin"));
  if (m.mask) rename_file(m.mask->path(), m.dir / (m.name + ".mask"));
  rename_file(m.idx->path(), m.dir / (m.name + ".idx"));
  fsync_dir(m.dir);
  m.finished = true;
  return {m.name, m.documents, static_cast<int64_t>(m.tokens), m.mask != nullptr, static_cast<int64_t>(m.trained),
          m.max_id};
}

// ---------------------------------------------------------------------------------------------
// Reader

struct TokenDataset::Impl {
  fs::path dir;
  ShardManifest manifest;
  bool u16 = true;
  struct Shard {
    std::shared_ptr<MappedFile> bin, idx, mask;
    const uint64_t* offsets = nullptr;
    std::vector<uint64_t> owned_offsets;  // when they are computed (Megatron), not mapped
  };
  std::vector<Shard> shards;
  std::vector<int64_t> first_doc;  // global index of each shard's first document, plus the total
};

namespace {

void check_tokenizer(const fs::path& where, const std::string& made_with, const std::string& expected) {
  if (!expected.empty() && expected != made_with)
    fail("{}: made with tokenizer sha256 {}, but the tokenizer in use (data.tokenizer) has sha256 {}; "
         "re-tokenize the corpus with this tokenizer",
         where.string(), made_with, expected);
}

}  // namespace

TokenDataset TokenDataset::from_megatron(MegatronIndex index, ShardManifest manifest,
                                         const std::string& expected_tokenizer_sha256) {
  check_tokenizer(index.prefix, manifest.tokenizer_sha256, expected_tokenizer_sha256);
  auto impl = std::make_shared<Impl>();
  impl->manifest = std::move(manifest);
  impl->u16 = index.element_size == 2;
  Impl::Shard s;
  s.bin = index.bin;
  s.owned_offsets = std::move(index.doc_offsets);
  s.offsets = s.owned_offsets.data();  // stays valid: the vector's buffer moves with it
  impl->first_doc = {0, static_cast<int64_t>(s.owned_offsets.size()) - 1};
  impl->shards.push_back(std::move(s));
  TokenDataset d;
  d.impl_ = std::move(impl);
  return d;
}

TokenDataset TokenDataset::open(const fs::path& dir, const std::string& expected_tokenizer_sha256) {
  auto impl = std::make_shared<Impl>();
  auto& m = *impl;
  const fs::path manifest_path = dir / "manifest.json";
  m.dir = dir;
  m.manifest = ShardManifest::read(manifest_path);
  const auto& man = m.manifest;
  check_tokenizer(dir, man.tokenizer_sha256, expected_tokenizer_sha256);
  if (man.dtype != shard_dtype_for_vocab(man.vocab_size))
    fail("{}: dtype {} does not fit vocab_size {}", manifest_path.string(), man.dtype, man.vocab_size);
  m.u16 = man.dtype == "uint16";
  const size_t elem = m.u16 ? 2 : 4;
  int64_t docs = 0, tokens = 0;
  m.first_doc.push_back(0);
  for (const auto& e : man.shards) {
    Impl::Shard s;
    s.bin = MappedFile::open(dir / (e.name + ".bin"));
    s.idx = MappedFile::open(dir / (e.name + ".idx"));
    const auto& idx_path = s.idx->path();
    if (e.documents < 0 || s.idx->size() != static_cast<size_t>(e.documents + 1) * 8)
      fail("{}: {} bytes, expected {} for {} documents (manifest)", idx_path.string(), s.idx->size(),
           (e.documents + 1) * 8, e.documents);
    if (s.bin->size() != static_cast<size_t>(e.tokens) * elem)
      fail("{}: {} bytes, expected {} for {} {} tokens (manifest)", s.bin->path().string(),
           s.bin->size(), e.tokens * static_cast<int64_t>(elem), e.tokens, man.dtype);
    if (man.has_mask) {
      s.mask = MappedFile::open(dir / (e.name + ".mask"));
      if (s.mask->size() != static_cast<size_t>(e.tokens))
        fail("{}: {} bytes, expected one per token: {} (manifest)", s.mask->path().string(), s.mask->size(),
             e.tokens);
    }
    s.offsets = reinterpret_cast<const uint64_t*>(s.idx->data());
    if (s.offsets[0] != 0) fail("{}: first offset is {}, expected 0", idx_path.string(), s.offsets[0]);
    for (int64_t i = 0; i < e.documents; ++i)
      if (s.offsets[i + 1] < s.offsets[i])
        fail("{}: offsets decrease at document {} ({} -> {})", idx_path.string(), i, s.offsets[i],
             s.offsets[i + 1]);
    if (e.max_token_id >= man.vocab_size)
      fail("{}: shards[{}] '{}' has max_token_id {}, outside its vocab_size {}", manifest_path.string(),
           m.shards.size(), e.name, e.max_token_id, man.vocab_size);
    if (s.offsets[e.documents] != static_cast<uint64_t>(e.tokens))
      fail("{}: last offset {} differs from the {} tokens of {}.bin", idx_path.string(),
           s.offsets[e.documents], e.tokens, e.name);
    docs += e.documents;
    tokens += e.tokens;
    m.first_doc.push_back(docs);
    m.shards.push_back(std::move(s));
  }
  if (docs != man.documents || tokens != man.tokens)
    fail("{}: shards hold {} documents / {} tokens, the manifest says {} / {}", manifest_path.string(),
         docs, tokens, man.documents, man.tokens);
  TokenDataset d;
  d.impl_ = std::move(impl);
  return d;
}

const ShardManifest& TokenDataset::manifest() const { return impl_->manifest; }
int64_t TokenDataset::num_documents() const { return impl_->first_doc.back(); }
int64_t TokenDataset::num_tokens() const { return impl_->manifest.tokens; }

namespace {

// (shard, local document) of a global document index.
std::pair<size_t, int64_t> find_shard(const std::vector<int64_t>& first_doc, int64_t doc) {
  if (doc < 0 || doc >= first_doc.back())
    fail("token dataset: document {} is outside [0, {})", doc, first_doc.back());
  size_t s = std::upper_bound(first_doc.begin(), first_doc.end(), doc) - first_doc.begin() - 1;
  return {s, doc - first_doc[s]};
}

}  // namespace

int64_t TokenDataset::document_length(int64_t doc) const {
  auto [s, local] = find_shard(impl_->first_doc, doc);
  const uint64_t* o = impl_->shards[s].offsets;
  return static_cast<int64_t>(o[local + 1] - o[local]);
}

void TokenDataset::read(int64_t doc, int64_t begin, int64_t count, int64_t* out) const {
  auto [s, local] = find_shard(impl_->first_doc, doc);
  const auto& shard = impl_->shards[s];
  const uint64_t start = shard.offsets[local];
  const int64_t length = static_cast<int64_t>(shard.offsets[local + 1] - start);
  if (begin < 0 || count < 0 || begin + count > length)
    fail("token dataset: tokens [{}, {}) are outside document {} of length {}", begin, begin + count,
         doc, length);
  const size_t first = start + static_cast<uint64_t>(begin);
  if (impl_->u16) {
    const auto* p = reinterpret_cast<const uint16_t*>(shard.bin->data()) + first;
    std::copy(p, p + count, out);
  } else {
    const auto* p = reinterpret_cast<const uint32_t*>(shard.bin->data()) + first;
    std::copy(p, p + count, out);
  }
}

bool TokenDataset::has_mask() const { return impl_->manifest.has_mask; }

std::string TokenDataset::locate(int64_t doc, int64_t offset) const {
  auto [s, local] = find_shard(impl_->first_doc, doc);
  const uint64_t start = impl_->shards[s].offsets[local];
  return fmt::format("{} token {} (document {} of that shard, position {})",
                     impl_->shards[s].bin->path().string(), start + static_cast<uint64_t>(offset), local, offset);
}

std::optional<TokenDataset::TokenAt> TokenDataset::first_id_at_least(size_t shard, int64_t limit) const {
  const int64_t first = impl_->first_doc.at(shard), end = impl_->first_doc.at(shard + 1);
  std::vector<int64_t> buf;
  for (int64_t d = first; d < end; ++d) {
    buf.resize(static_cast<size_t>(document_length(d)));
    read(d, 0, static_cast<int64_t>(buf.size()), buf.data());
    for (size_t k = 0; k < buf.size(); ++k)
      if (buf[k] >= limit) return TokenAt{d, static_cast<int64_t>(k), buf[k]};
  }
  return std::nullopt;
}

void TokenDataset::read_mask(int64_t doc, int64_t begin, int64_t count, uint8_t* out) const {
  auto [s, local] = find_shard(impl_->first_doc, doc);
  const auto& shard = impl_->shards[s];
  const uint64_t start = shard.offsets[local];
  const int64_t length = static_cast<int64_t>(shard.offsets[local + 1] - start);
  if (begin < 0 || count < 0 || begin + count > length)
    fail("token dataset: mask [{}, {}) is outside document {} of length {}", begin, begin + count, doc,
         length);
  if (!shard.mask) {
    std::fill(out, out + count, uint8_t{1});
    return;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(shard.mask->data()) + start + static_cast<uint64_t>(begin);
  std::copy(p, p + count, out);
}

}  // namespace agenttune
