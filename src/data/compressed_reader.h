#pragma once
// Streaming reads of plain, gzip and zstd files (detected from the magic bytes, not the name) with
// bounded memory, counting and hashing the bytes on disk as they go so the manifest's sha256 costs
// no second pass.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace agenttune::data {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Up to n decompressed bytes into dst; 0 only at the end. Corrupt input throws naming the file.
  virtual size_t read(char* dst, size_t n) = 0;
  virtual uint64_t raw_bytes_read() const = 0;
  // SHA-256 of the on-disk bytes; valid once read() has returned 0.
  virtual std::string raw_sha256() = 0;
};

std::unique_ptr<ByteSource> open_byte_source(const std::filesystem::path& path);

// Lines of a ByteSource, without the trailing "\n" (or "\r\n"). Memory is one chunk plus the
// longest line.
class LineReader {
 public:
  explicit LineReader(std::unique_ptr<ByteSource> src) : src_(std::move(src)) {}
  // The next line; the view stays valid until the next call. False at the end.
  bool next(std::string_view& line);
  ByteSource& source() { return *src_; }

 private:
  std::unique_ptr<ByteSource> src_;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
};

// The whole decompressed content (plain-text inputs are one document per file).
std::string read_all(ByteSource& src);

}  // namespace agenttune::data
