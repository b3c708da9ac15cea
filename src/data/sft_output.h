#pragma once
// Internal to the SFT prepare: one dataset's output folder (rolling shard_NNNNN.{bin,idx,mask}
// + manifest.json), and the seeded helpers the pipeline shares.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agenttune/chat/template.h"
#include "agenttune/data/token_shards.h"
#include "agenttune/util/seeded.h"

namespace agenttune::sft_detail {

// A stream per (seed, dataset, purpose): datasets sharing the default seed stay independent.
uint64_t stream_seed(uint64_t seed, std::string_view dataset, std::string_view purpose);

// k distinct indices of [0, n) chosen by a seeded partial Fisher-Yates, in increasing order.
std::vector<size_t> seeded_subset(size_t n, size_t k, uint64_t seed);

class SftOutput {
 public:
  // Removes a previous manifest first, so a crash leaves no folder that looks complete.
  SftOutput(std::filesystem::path dir, const Tokenizer& tok, int64_t shard_tokens);
  ~SftOutput();
  // `file` = the input file the sample came from ("" for generated samples).
  void add(const RenderedSample& sample, const std::string& file);
  void skipped(const std::string& file) { ++files_[file].skipped; }
  // Closes the last shard, removes shards of an earlier run beyond the new ones, hashes the
  // input files and writes the manifest last.
  ShardManifest finish();

 private:
  void roll();
  std::filesystem::path dir_;
  ShardManifest manifest_;
  int64_t shard_tokens_;
  std::unique_ptr<TokenShardWriter> writer_;
  int64_t writer_tokens_ = 0;
  std::map<std::string, ShardSourceFile> files_;
};

}  // namespace agenttune::sft_detail
