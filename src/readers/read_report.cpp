#include <fmt/format.h>

#include "agenttune/readers/dataset.h"

namespace agenttune {

void ReadReport::note(std::string message) {
  if (messages.size() < max_messages) messages.push_back(std::move(message));
}

std::string ReadReport::summary() const {
  std::string out = fmt::format("{} records read, {} conversations kept", records, kept);
  auto counts = [&](const char* title, const std::map<std::string, int64_t>& m) {
    if (m.empty()) return;
    out += fmt::format("\n  {}:", title);
    for (const auto& [k, n] : m) out += fmt::format(" {} x{},", k, n);
    out.pop_back();
  };
  counts("dropped records", dropped_records);
  counts("dropped turns", dropped_turns);
  counts("mapped roles", mapped_roles);
  if (merged_turns > 0) out += fmt::format("\n  merged turns: {}", merged_turns);
  for (const auto& [file, format] : files)
    out += fmt::format("\n  file {} ({})", file, format_name(format));
  if (!messages.empty()) {
    out += "\n  first problems:";
    for (const auto& m : messages) out += "\n    " + m;
  }
  return out;
}

}  // namespace agenttune
