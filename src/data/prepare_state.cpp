#include "prepare_state.h"

#include <nlohmann/json.hpp>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/log.h"
#include "agenttune/util/sha256.h"
#include "manifest_json.h"

namespace agenttune::data {

namespace fs = std::filesystem;

std::string prepare_key(const PrepareOptions& opts, const std::string& tokenizer_sha256,
                        const std::vector<InputFile>& files) {
  nlohmann::json j = {{"tokenizer", tokenizer_sha256}, {"text_field", opts.text_field},
                      {"add_bos", opts.add_bos},       {"add_eos", opts.add_eos},
                      {"shard_tokens", opts.shard_tokens},
                      {"on_error", opts.on_error == OnError::Skip ? "skip" : "fail"},
                      {"format", ShardManifest::kFormatVersion}};
  for (const auto& f : files)
    j["inputs"].push_back({f.path.string(), f.bytes, f.mtime_ns, static_cast<int>(f.format)});
  // Replace, not throw: file names need not be UTF-8 (the key only has to tell inputs apart).
  return sha256_hex(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void PrepareState::write(const fs::path& file) const {
  nlohmann::ordered_json j = {{"key", key},
                      {"complete", complete},
                      {"resume_file", resume_file},
                      {"resume_line", resume_line},
                      {"bad_records", bad_records},
                      {"empty_documents", empty_documents},
                      {"first_errors", first_errors},
                      {"manifest", manifest_to_json(manifest)}};
  write_file_atomic(file, j.dump(1) + "\n");
}

std::optional<PrepareState> PrepareState::load_matching(const fs::path& dir, const std::string& key) {
  const fs::path file = dir / kStateFile;
  if (!fs::exists(file)) return std::nullopt;
  try {
    const auto j = nlohmann::json::parse(read_text_file(file));
    if (j.at("key").get<std::string>() != key) {
      log::info("prepare: {} is from other inputs or options; starting over", file.string());
      return std::nullopt;
    }
    PrepareState s;
    s.key = key;
    s.complete = j.at("complete").get<bool>();
    s.resume_file = j.at("resume_file").get<size_t>();
    s.resume_line = j.at("resume_line").get<int64_t>();
    s.bad_records = j.at("bad_records").get<int64_t>();
    s.empty_documents = j.at("empty_documents").get<int64_t>();
    s.first_errors = j.at("first_errors").get<std::vector<std::string>>();
    s.manifest = manifest_from_json(j.at("manifest"), file);
    const uint64_t elem = s.manifest.dtype == "uint16" ? 2 : 4;
    for (const auto& e : s.manifest.shards) {
      const fs::path bin = dir / (e.name + ".bin"), idx = dir / (e.name + ".idx");
      if (!fs::exists(bin) || !fs::exists(idx) || fs::file_size(bin) != e.tokens * elem ||
          fs::file_size(idx) != (e.documents + 1) * 8ULL) {
        log::info("prepare: shard {} in {} is missing or resized; starting over", e.name, dir.string());
        return std::nullopt;
      }
    }
    return s;
  } catch (const std::exception& e) {
    log::warn("prepare: cannot use {} ({}); starting over", file.string(), e.what());
    return std::nullopt;
  }
}

}  // namespace agenttune::data
