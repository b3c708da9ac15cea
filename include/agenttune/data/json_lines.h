#pragma once
// Small JSON Lines files read whole (held-out records, multiple-choice questions): each non-blank
// line parsed and handed over; any error, the parser's or the handler's, becomes
// "FILE line N: what".
#include <filesystem>
#include <functional>

#include <nlohmann/json_fwd.hpp>

namespace agenttune {

void for_each_json_line(const std::filesystem::path& file, const std::function<void(const nlohmann::json&)>& fn);

}  // namespace agenttune
