#pragma once
// Prepared corpora made directly as token shards, for tests that need data but not a tokenizer:
// document d holds copies of token base+d (so every token says which document it came from),
// ending in EOS=2.
#include <cstdint>
#include <filesystem>

namespace agenttune::testing {

std::filesystem::path make_synthetic_source(const std::filesystem::path& dir, int64_t docs, int64_t base,
                                            uint64_t seed, int64_t min_len = 20, int64_t max_len = 400,
                                            int64_t vocab_size = 1 << 20);

}  // namespace agenttune::testing
