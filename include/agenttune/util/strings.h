#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace agenttune {

// Edit distance, used to suggest the nearest valid key for a misspelt one.
size_t levenshtein(std::string_view a, std::string_view b);

// The candidate closest to `key`, or "" when nothing is reasonably close.
std::string nearest(std::string_view key, const std::vector<std::string>& candidates);

std::vector<std::string> split(std::string_view s, char sep);

// "a=1, b=2" for named counts (drop reasons, transform counts), in key order; "" when empty.
std::string join_counts(const std::map<std::string, int64_t>& counts, std::string_view sep = ", ");

// "a, b, c, ..." : the first `shown` items, for messages that name a few of many files.
std::string join_first(const std::vector<std::string>& items, size_t shown = 3, std::string_view sep = ", ");

}  // namespace agenttune
