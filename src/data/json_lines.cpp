#include "agenttune/data/json_lines.h"

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

void for_each_json_line(const std::filesystem::path& file, const std::function<void(const nlohmann::json&)>& fn) {
  std::istringstream in(read_text_file(file));
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      fn(nlohmann::json::parse(line));
    } catch (const std::exception& e) {
      fail("{} line {}: {}", file.string(), n, e.what());
    }
  }
}

}  // namespace agenttune
