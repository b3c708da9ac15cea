#pragma once
// What makes `prepare` restartable: after each shard lands, prepare_state.json records the shards
// done, the input position they cover and the counters so far, under a key that hashes every
// option and each input's path, size and mtime. A rerun with the same key continues after the
// last complete shard; any other state is ignored and the folder is rebuilt.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/data/prepare.h"
#include "input_files.h"

namespace agenttune::data {

struct PrepareState {
  std::string key;
  bool complete = false;
  ShardManifest manifest;  // shards finished so far; sources with counters so far
  size_t resume_file = 0;  // records of earlier files, and lines <= resume_line of this one, are done
  int64_t resume_line = 0;
  int64_t bad_records = 0;
  int64_t empty_documents = 0;
  std::vector<std::string> first_errors;

  void write(const std::filesystem::path& file) const;
  // The state in `dir` when its key is `key` and its shards are all present at the recorded size.
  static std::optional<PrepareState> load_matching(const std::filesystem::path& dir, const std::string& key);
};

std::string prepare_key(const PrepareOptions& opts, const std::string& tokenizer_sha256,
                        const std::vector<InputFile>& files);

inline constexpr const char* kStateFile = "prepare_state.json";

}  // namespace agenttune::data
