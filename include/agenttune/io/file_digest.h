#pragma once
// Content digests for files we write and later trust (checkpoints): CRC-32 (zlib's, the same as
// Python's zlib.crc32) plus the byte count. It detects the flipped bytes and truncations that
// storage and hand edits cause; it is not a defence against someone forging a file. Computed
// incrementally while a file is written, so a save never reads its output back.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

namespace agenttune {

struct FileDigest {
  uint64_t bytes = 0;
  uint32_t crc32 = 0;

  bool operator==(const FileDigest&) const = default;
  std::string to_string() const;  // "crc32 1a2b3c4d, 1234 bytes"
  nlohmann::json to_json() const;
  // Errors name `where` (the file holding the JSON) and say what was expected.
  static FileDigest from_json(const nlohmann::json& j, const std::string& where);
};

class DigestBuilder {
 public:
  void update(const void* data, size_t n);
  FileDigest result() const { return d_; }

 private:
  FileDigest d_;
};

FileDigest digest_of(std::string_view bytes);
// Reads the file through a memory map; errors name it.
FileDigest digest_of_file(const std::filesystem::path& path);

}  // namespace agenttune
