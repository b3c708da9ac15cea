#include "sft_output.h"

#include <algorithm>
#include <set>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/sha256.h"

namespace agenttune::sft_detail {

namespace fs = std::filesystem;

uint64_t stream_seed(uint64_t seed, std::string_view dataset, std::string_view purpose) {
  return splitmix64(seed ^ splitmix64(hash_text(dataset) ^ splitmix64(hash_text(purpose))));
}

std::vector<size_t> seeded_subset(size_t n, size_t k, uint64_t seed) {
  k = std::min(k, n);
  std::vector<size_t> idx(n);
  for (size_t i = 0; i < n; ++i) idx[i] = i;
  Rng rng(seed);
  for (size_t i = 0; i < k; ++i) std::swap(idx[i], idx[i + rng.below(n - i)]);
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

SftOutput::SftOutput(fs::path dir, const Tokenizer& tok, int64_t shard_tokens)
    : dir_(std::move(dir)), shard_tokens_(shard_tokens) {
  create_dirs(dir_);
  remove_file(dir_ / "manifest.json");
  manifest_.tokenizer_sha256 = tok.fingerprint();
  manifest_.vocab_size = tok.vocab_size();
  manifest_.dtype = shard_dtype_for_vocab(tok.vocab_size());
  manifest_.has_mask = true;
  for (const auto& t : tok.added_tokens()) manifest_.added_tokens.push_back(t.content);
}

SftOutput::~SftOutput() = default;

void SftOutput::roll() {
  if (writer_) {
    ShardEntry e = writer_->finish();
    manifest_.documents += e.documents;
    manifest_.tokens += e.tokens;
    manifest_.trained_tokens += e.trained_tokens;
    manifest_.shards.push_back(std::move(e));
    writer_.reset();
  }
}

void SftOutput::add(const RenderedSample& s, const std::string& file) {
  if (writer_ && writer_tokens_ >= shard_tokens_) roll();
  if (!writer_) {
    writer_ = std::make_unique<TokenShardWriter>(dir_, fmt::format("shard_{:05d}", manifest_.shards.size()),
                                                 manifest_.vocab_size);
    writer_tokens_ = 0;
  }
  // Every document carries a mask, so a shard of only all-trained documents still gets one.
  writer_->add_document(s.ids, s.trained);
  writer_tokens_ += static_cast<int64_t>(s.ids.size());
  auto& f = files_[file];
  ++f.documents;
  f.tokens += static_cast<int64_t>(s.ids.size());
}

ShardManifest SftOutput::finish() {
  roll();
  std::set<std::string> keep;
  for (const auto& e : manifest_.shards)
    for (const char* ext : {".bin", ".idx", ".mask"}) keep.insert(e.name + ext);
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("shard_") && !keep.contains(name)) remove_file(entry.path());
  }
  for (auto& [path, f] : files_) {
    if (path.empty()) continue;  // generated samples
    f.path = path;
    f.bytes = fs::file_size(path);
    f.sha256 = sha256_file_hex(path);
    manifest_.sources.push_back(f);
  }
  manifest_.write(dir_ / "manifest.json");
  return manifest_;
}

}  // namespace agenttune::sft_detail
