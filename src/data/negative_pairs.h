#pragma once
// Internal to the SFT prepare: transforms.negatives.pairs_file read into query/answer pairs.
#include <filesystem>
#include <vector>

#include "agenttune/transforms/transform_config.h"

namespace agenttune::sft_detail {

// JSON Lines, or one JSON array, of objects with string fields "query" and "answer". Errors name
// the file, the line (JSON Lines) or record index (array), and the field.
std::vector<NegativePair> read_negative_pairs(const std::filesystem::path& file);

}  // namespace agenttune::sft_detail
