#pragma once
// `agenttune prepare`: raw corpora (JSONL with a configurable text field, plain text, folders,
// globs; gzip and zstd) -> token shards. Multi-threaded, memory bounded, restartable per shard.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "agenttune/config/scalars.h"
#include "agenttune/data/token_shards.h"

namespace agenttune {

enum class OnError { Fail, Skip };

template <>
struct EnumNames<OnError> {
  static constexpr std::array<std::pair<OnError, std::string_view>, 2> values = {
      {{OnError::Fail, "fail"}, {OnError::Skip, "skip"}}};
};

struct PrepareOptions {
  std::string name;                  // the corpus, as messages name it (default: the output folder)
  std::vector<std::string> inputs;   // files, folders (recursive) or globs
  std::filesystem::path output_dir;  // gets manifest.json and shard_NNNNN.{bin,idx}
  std::filesystem::path tokenizer;   // SentencePiece .model
  std::string text_field = "text";   // JSONL field holding the document ("content" for The Stack)
  bool add_bos = true;
  bool add_eos = true;
  int64_t shard_tokens = 256LL << 20;  // roll to a new shard after this many tokens
  int threads = 0;                     // 0 = all cores
  OnError on_error = OnError::Fail;
  bool progress = true;  // live progress line on stderr
};

struct PrepareReport {
  ShardManifest manifest;
  int64_t bad_records = 0;
  std::vector<std::string> first_errors;  // a few examples (file:line: what), when skipping
  int64_t empty_documents = 0;
  double seconds = 0;
  uint64_t input_bytes = 0;
};

// A corpus without a single document is an error naming it and its inputs (before any manifest is
// written), so an empty source fails here rather than when training opens it.
PrepareReport prepare_corpus(const PrepareOptions& opts);

}  // namespace agenttune
