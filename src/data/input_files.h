#pragma once
// Turning `prepare` inputs (files, folders, globs) into the ordered list of files to read.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace agenttune::data {

enum class InputFormat { Jsonl, Text };

struct InputFile {
  std::filesystem::path path;
  InputFormat format = InputFormat::Jsonl;
  uint64_t bytes = 0;      // on disk (compressed size for .gz/.zst)
  int64_t mtime_ns = 0;    // with bytes, what a resumed run checks to trust earlier work
};

// .jsonl/.ndjson/.json are JSONL (one record per line); anything else is plain text, one document
// per file. A trailing .gz/.zst/.zstd is looked through; compression itself is detected from the
// file's magic bytes when reading.
InputFormat input_format(const std::filesystem::path& path);

// Expands each input in the order given: a file as is, a folder recursively (files with a known
// extension, hidden entries skipped), a glob via glob(3) (no `**`). Each folder or glob expands in
// sorted path order so the result, and hence the shards, never depend on directory order. A file
// named twice is kept once, at its first position. Nothing matched is an error naming the input.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& inputs);

}  // namespace agenttune::data
