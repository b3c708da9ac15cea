#pragma once
// JSON files at the boundary: parse errors name the file; HF weight indexes are validated once.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace agenttune {

// Parses a whole JSON file; a missing file or a syntax error throws naming the file.
nlohmann::json read_json_file(const std::filesystem::path& path);

// `*.index.json` of a sharded HF checkpoint: (tensor name, shard path) in index order. Throws
// naming the index when weight_map is missing or malformed or names a file that does not exist.
std::vector<std::pair<std::string, std::filesystem::path>> read_weight_index(
    const std::filesystem::path& index_path);

}  // namespace agenttune
