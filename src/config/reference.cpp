#include "agenttune/config/reference.h"

#include <cxxabi.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdlib>
#include <memory>
#include <set>

#include "agenttune/util/error.h"

namespace agenttune {

namespace config_detail {

std::string type_name_from_expected(std::string_view expected) {
  for (std::string_view article : {"a ", "an "})
    if (expected.substr(0, article.size()) == article) return std::string(expected.substr(article.size()));
  return std::string(expected);
}

std::string struct_name(const std::type_index& t) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> name(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status),
                                                   &std::free);
  std::string s = status == 0 ? name.get() : t.name();
  return s.starts_with("agenttune::") ? s.substr(11) : s;
}

}  // namespace config_detail

const std::string* ConfigMeanings::find(const ConfigKey& k) const {
  auto s = by_struct_.find(k.owner);
  if (s == by_struct_.end()) return nullptr;
  auto m = s->second.find(k.key);
  return m == s->second.end() ? nullptr : &m->second;
}

std::vector<std::string> ConfigMeanings::unused(const std::vector<ConfigKey>& used) const {
  std::set<std::pair<std::type_index, std::string>> seen;
  for (const auto& k : used) seen.emplace(k.owner, k.key);
  std::vector<std::string> out;
  for (const auto& [owner, meanings] : by_struct_)
    for (const auto& [key, meaning] : meanings)
      if (!seen.count({owner, key})) out.push_back(config_detail::struct_name(owner) + "." + key);
  return out;
}

namespace {

// A table cell: one line, no unescaped column separator.
std::string cell(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else out += c == '\n' ? ' ' : c;
  }
  return out;
}

std::string code(std::string_view s) {
  if (s.empty()) return "";
  // A value holding a backtick needs a longer fence (CommonMark code spans).
  return s.find('`') == std::string_view::npos ? "`" + cell(s) + "`" : "`` " + cell(s) + " ``";
}

std::string table(const ConfigReferenceSection& section, const ConfigMeanings& meanings,
                  std::vector<std::string>& missing) {
  std::string out = "| Key | Type | Default | Meaning |\n|---|---|---|---|\n";
  for (const auto& k : section.keys) {
    const std::string* meaning = meanings.find(k);
    if (!meaning || meaning->empty())
      missing.push_back(fmt::format("{} ({}.{})", k.path, config_detail::struct_name(k.owner), k.key));
    out += fmt::format("| {} | {} | {} | {} |\n", code(k.path), cell(k.type), code(k.default_yaml),
                       meaning ? cell(*meaning) : "");
  }
  return out;
}

}  // namespace

std::string config_reference_markdown(std::string_view preamble, const std::vector<ConfigReferenceSection>& sections,
                                      const ConfigMeanings& meanings) {
  std::string out(preamble);
  std::vector<std::string> missing;
  std::vector<ConfigKey> all;
  for (const auto& s : sections) {
    out += fmt::format("\n## {}\n\n{}\n\n{}", s.title, s.intro, table(s, meanings, missing));
    all.insert(all.end(), s.keys.begin(), s.keys.end());
  }
  const std::vector<std::string> unused = meanings.unused(all);
  if (!missing.empty() || !unused.empty())
    fail("config reference: {} key(s) without a meaning{}{}; {} meaning(s) of no key{}{}; edit {}", missing.size(),
         missing.empty() ? "" : ": ", fmt::join(missing, ", "), unused.size(), unused.empty() ? "" : ": ",
         fmt::join(unused, ", "), meanings.table());
  return out;
}

}  // namespace agenttune
