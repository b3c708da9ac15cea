#include "agenttune/io/json_file.h"

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

namespace fs = std::filesystem;

nlohmann::json read_json_file(const fs::path& path) {
  if (!fs::exists(path)) fail("{}: not found", path.string());
  try {
    return nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed JSON: {}", path.string(), e.what());
  }
}

std::vector<std::pair<std::string, fs::path>> read_weight_index(const fs::path& index_path) {
  auto index = read_json_file(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail("{}: missing object 'weight_map'", index_path.string());
  std::vector<std::pair<std::string, fs::path>> out;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string())
      fail("{}: weight_map entry for '{}' is not a file name", index_path.string(), tensor);
    fs::path p = index_path.parent_path() / file.get<std::string>();
    if (!fs::exists(p))
      fail("{}: tensor '{}' is mapped to {}, which does not exist", index_path.string(), tensor,
           p.string());
    out.emplace_back(tensor, std::move(p));
  }
  return out;
}

}  // namespace agenttune
