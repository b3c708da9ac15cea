#include "negative_pairs.h"

#include <nlohmann/json.hpp>

#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune::sft_detail {

namespace {

NegativePair pair_of(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: expected an object with \"query\" and \"answer\", got {}", where, j.type_name());
  NegativePair p;
  for (auto [key, out] : {std::pair{"query", &p.query}, std::pair{"answer", &p.answer}}) {
    auto it = j.find(key);
    if (it == j.end()) fail("{}: field \"{}\" is missing", where, key);
    if (!it->is_string()) fail("{}: field \"{}\" must be a string, got {}", where, key, it->type_name());
    *out = it->get<std::string>();
  }
  return p;
}

}  // namespace

std::vector<NegativePair> read_negative_pairs(const std::filesystem::path& file) {
  const std::string text = read_text_file(file);
  std::vector<NegativePair> pairs;
  const auto first = text.find_first_not_of(" \t\r\n");
  try {
    if (first != std::string::npos && text[first] == '[') {
      auto all = nlohmann::json::parse(text);
      for (size_t i = 0; i < all.size(); ++i)
        pairs.push_back(pair_of(all[i], fmt::format("{} record {}", file.string(), i)));
      return pairs;
    }
    size_t line_no = 0, begin = 0;
    while (begin < text.size()) {
      size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      ++line_no;
      const std::string_view line(text.data() + begin, end - begin);
      if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
        const std::string where = fmt::format("{}:{}", file.string(), line_no);
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
          fail("{}: not valid JSON ({})", where, e.what());
        }
        pairs.push_back(pair_of(j, where));
      }
      begin = end + 1;
    }
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: not valid JSON ({})", file.string(), e.what());
  }
  return pairs;
}

}  // namespace agenttune::sft_detail
