#include "agenttune/data/source_dataset.h"

#include "agenttune/data/megatron_dataset.h"

namespace agenttune {

namespace {

ShardManifest megatron_manifest(const MixtureSource& s, const MegatronIndex& index) {
  ShardManifest m;
  m.tokenizer_sha256 = s.tokenizer_sha256;
  m.vocab_size = s.vocab_size;
  m.dtype = index.element_size == 2 ? "uint16" : "uint32";
  m.documents = static_cast<int64_t>(index.doc_offsets.size()) - 1;
  m.tokens = static_cast<int64_t>(index.doc_offsets.back());
  m.trained_tokens = m.tokens;
  m.shards.push_back({s.path.filename().string(), m.documents, m.tokens, false, m.tokens});
  return m;
}

}  // namespace

ShardManifest source_manifest(const MixtureSource& s) {
  if (s.format == SourceFormat::Megatron) return megatron_manifest(s, read_megatron_index(s.path));
  return ShardManifest::read(s.path / "manifest.json");
}

TokenDataset open_source(const MixtureSource& s, const std::string& expected_tokenizer_sha256) {
  if (s.format == SourceFormat::Prepared) return TokenDataset::open(s.path, expected_tokenizer_sha256);
  auto index = read_megatron_index(s.path);
  auto manifest = megatron_manifest(s, index);
  return TokenDataset::from_megatron(std::move(index), std::move(manifest), expected_tokenizer_sha256);
}

}  // namespace agenttune
