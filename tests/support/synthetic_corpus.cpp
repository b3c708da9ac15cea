#include "synthetic_corpus.h"

#include <random>
#include <vector>

#include "agenttune/data/token_shards.h"

namespace agenttune::testing {

std::filesystem::path make_synthetic_source(const std::filesystem::path& dir, int64_t docs, int64_t base,
                                            uint64_t seed, int64_t min_len, int64_t max_len, int64_t vocab_size) {
  std::filesystem::create_directories(dir);
  std::mt19937_64 rng(seed);
  TokenShardWriter w(dir, "shard_00000", vocab_size);
  ShardManifest m;
  m.vocab_size = vocab_size;
  m.dtype = shard_dtype_for_vocab(vocab_size);
  for (int64_t d = 0; d < docs; ++d) {
    int64_t len = min_len + static_cast<int64_t>(rng() % static_cast<uint64_t>(max_len - min_len + 1));
    std::vector<int32_t> t(static_cast<size_t>(len), static_cast<int32_t>(base + d));
    t.back() = 2;
    w.add_document(t);
  }
  auto e = w.finish();
  m.documents = e.documents;
  m.tokens = e.tokens;
  m.shards.push_back(e);
  m.write(dir / "manifest.json");
  return dir;
}

}  // namespace agenttune::testing
