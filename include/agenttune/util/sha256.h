#pragma once
// SHA-256, self-contained (FIPS 180-4): fingerprints of tokenizer models and data files. Incremental
// so multi-gigabyte files hash in one pass without being held in memory.
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace agenttune {

class Sha256 {
 public:
  Sha256();
  Sha256& update(const void* data, size_t size);
  Sha256& update(std::string_view s) { return update(s.data(), s.size()); }
  // Finishes the hash; the object must not be updated afterwards.
  std::array<uint8_t, 32> digest();
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view data);
// Streams the file; throws agenttune::Error naming it if it cannot be read.
std::string sha256_file_hex(const std::filesystem::path& path);

}  // namespace agenttune
