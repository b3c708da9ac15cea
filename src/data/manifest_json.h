#pragma once
// The manifest's JSON form, shared by manifest.json and the resume state that embeds it.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "agenttune/data/token_shards.h"

namespace agenttune::data {

nlohmann::ordered_json manifest_to_json(const ShardManifest& m);
// Errors name `file` and the offending key.
ShardManifest manifest_from_json(const nlohmann::json& j, const std::filesystem::path& file);

}  // namespace agenttune::data
