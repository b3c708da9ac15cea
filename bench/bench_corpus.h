#pragma once
// A synthetic code-heavy corpus for the benchmarks: seeded, so every run measures the same bytes.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace agenttune::bench {

// One document: about 70% source code (Python, C++, JS, SQL shapes with random identifiers) and
// 30% prose from a syllable-made vocabulary, a little non-ASCII.
std::string make_document(uint64_t seed);

// Writes JSONL files ({"id": .., "text": ..}) under dir until `bytes` are written; returns them.
std::vector<std::filesystem::path> write_corpus(const std::filesystem::path& dir, uint64_t bytes, int files);

}  // namespace agenttune::bench
