#include "agenttune/io/file_digest.h"

#include <zlib.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

std::string FileDigest::to_string() const { return fmt::format("crc32 {:08x}, {} bytes", crc32, bytes); }

nlohmann::json FileDigest::to_json() const {
  return {{"bytes", bytes}, {"crc32", fmt::format("{:08x}", crc32)}};
}

FileDigest FileDigest::from_json(const nlohmann::json& j, const std::string& where) {
  const bool ok = j.is_object() && j.contains("bytes") && j["bytes"].is_number_unsigned() && j.contains("crc32") &&
                  j["crc32"].is_string() && j["crc32"].get<std::string>().size() == 8;
  if (!ok) fail("{}: a digest must be {{\"bytes\": N, \"crc32\": \"8 hex digits\"}}, got {}", where, j.dump());
  FileDigest d;
  d.bytes = j["bytes"].get<uint64_t>();
  const std::string hex = j["crc32"].get<std::string>();
  size_t used = 0;
  try {
    d.crc32 = static_cast<uint32_t>(std::stoul(hex, &used, 16));
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != hex.size()) fail("{}: crc32 '{}' is not 8 hex digits", where, hex);
  return d;
}

void DigestBuilder::update(const void* data, size_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  d_.bytes += n;
  while (n > 0) {  // crc32_z takes size_t, but stay within what every zlib build handles well
    size_t k = std::min<size_t>(n, size_t{1} << 30);
    d_.crc32 = static_cast<uint32_t>(::crc32_z(d_.crc32, p, k));
    p += k;
    n -= k;
  }
}

FileDigest digest_of(std::string_view bytes) {
  DigestBuilder b;
  b.update(bytes.data(), bytes.size());
  return b.result();
}

FileDigest digest_of_file(const std::filesystem::path& path) {
  auto map = MappedFile::open(path);
  DigestBuilder b;
  b.update(map->data(), map->size());
  return b.result();
}

}  // namespace agenttune
