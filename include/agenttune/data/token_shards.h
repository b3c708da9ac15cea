#pragma once
// Token shards, the on-disk form of a prepared corpus (docs/formats.md):
//   NAME.bin       token ids, little-endian uint16 when vocab_size <= 65536, else uint32
//   NAME.idx       little-endian uint64 document offsets into NAME.bin, in tokens:
//                  num_documents + 1 entries, the first 0, the last the token count
//   NAME.mask      optional (SFT): one byte per token, 1 = the token is a trained target (the loss
//                  is taken on predicting it from the tokens before), 0 = context only
//   manifest.json  format version, tokenizer fingerprint, vocab size, dtype, counts, the source
//                  files with their sizes and hashes, and the shards with their counts
// Each document is stored as it will be trained on: [BOS] tokens [EOS], per the prepare options
// (SFT: exactly the chat template's rendering).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "agenttune/data/megatron_dataset.h"

namespace agenttune {

class MappedFile;

struct ShardSourceFile {
  std::string path;
  uint64_t bytes = 0;
  std::string sha256;
  int64_t documents = 0;  // documents written
  int64_t tokens = 0;
  int64_t skipped = 0;  // empty or (with on_error: skip) bad records
};

struct ShardEntry {
  std::string name;  // NAME of NAME.bin / NAME.idx, relative to the manifest's folder
  int64_t documents = 0;
  int64_t tokens = 0;
  bool has_mask = false;       // the writer wrote NAME.mask
  int64_t trained_tokens = 0;  // mask ones (= tokens without a mask)
  // The largest token id in NAME.bin, so a trainer can refuse ids its model has no embedding for
  // before the first step; -1 when unknown (an empty shard, or a manifest from before the key).
  int64_t max_token_id = -1;
};

struct ShardManifest {
  static constexpr int kFormatVersion = 1;
  int format_version = kFormatVersion;
  std::string tokenizer_sha256;
  int64_t vocab_size = 0;
  std::string dtype;  // "uint16" | "uint32"
  int64_t documents = 0;
  int64_t tokens = 0;
  std::vector<ShardSourceFile> sources;
  std::vector<ShardEntry> shards;
  // SFT corpora: every shard has a NAME.mask. The three fields below are written only when set,
  // so pretraining manifests keep their shape.
  bool has_mask = false;
  int64_t trained_tokens = 0;  // mask ones over all shards (= tokens when has_mask is false)
  // Tokens the chat template added after the base vocab (ChatML), in id order: the tokenizer is
  // the .model named by tokenizer_sha256 plus these.
  std::vector<std::string> added_tokens;

  static ShardManifest read(const std::filesystem::path& manifest_json);  // errors name the file
  void write(const std::filesystem::path& manifest_json) const;           // atomic
};

std::string shard_dtype_for_vocab(int64_t vocab_size);

// Writes one NAME.bin/NAME.idx pair; both appear (atomically renamed) only on finish().
class TokenShardWriter {
 public:
  TokenShardWriter(const std::filesystem::path& dir, std::string name, int64_t vocab_size);
  ~TokenShardWriter();  // without finish(): temporaries are removed, nothing half-written remains
  // `mask` (empty = none) holds one 0/1 byte per token. NAME.mask is written once any document
  // has one; documents without a mask count as all trained.
  void add_document(std::span<const int32_t> tokens, std::span<const uint8_t> mask = {});
  ShardEntry finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A prepared corpus opened read-only through memory maps: every shard of a manifest, documents
// addressed by a global index.
class TokenDataset {
 public:
  // Opens `dir`/manifest.json and its shards; checks sizes against the manifest. When
  // `expected_tokenizer_sha256` is non-empty and differs, refuses with a message naming both.
  static TokenDataset open(const std::filesystem::path& dir, const std::string& expected_tokenizer_sha256 = "");
  // A Megatron indexed dataset (data/megatron_dataset.h) as one shard; `manifest` states what
  // the files cannot (vocabulary, tokenizer fingerprint) and their counts.
  static TokenDataset from_megatron(MegatronIndex index, ShardManifest manifest,
                                    const std::string& expected_tokenizer_sha256 = "");

  const ShardManifest& manifest() const;
  int64_t num_documents() const;
  int64_t num_tokens() const;
  int64_t document_length(int64_t doc) const;
  // Copies tokens [begin, begin+count) of document `doc` into out (int64 for the model).
  void read(int64_t doc, int64_t begin, int64_t count, int64_t* out) const;
  // Whether the corpus carries loss masks (SFT); read_mask gives all ones when it does not.
  bool has_mask() const;
  void read_mask(int64_t doc, int64_t begin, int64_t count, uint8_t* out) const;

  // Where token `offset` of document `doc` is stored, for error messages:
  // "DIR/NAME.bin token 1234 (document 5 of that shard, position 7)".
  std::string locate(int64_t doc, int64_t offset) const;
  // The first token of shard `shard` (an index into manifest().shards) whose id is >= `limit`, as
  // (global document, offset in it, id); nullopt when there is none. A full scan of the shard: it
  // only runs to report a corruption the manifest already revealed.
  struct TokenAt {
    int64_t doc = 0, offset = 0, id = 0;
  };
  std::optional<TokenAt> first_id_at_least(size_t shard, int64_t limit) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace agenttune
