#include "agenttune/transforms/report.h"

#include <fmt/format.h>

namespace agenttune {

int64_t TransformReport::get(const std::string& key) const {
  auto it = counts.find(key);
  return it == counts.end() ? 0 : it->second;
}

void TransformReport::note(std::string message) {
  if (notes.size() < max_notes) notes.push_back(std::move(message));
}

std::string TransformReport::summary() const {
  std::string s = transform + ":";
  for (const auto& [key, n] : counts) s += fmt::format(" {}={}", key, n);
  for (const auto& n : notes) s += "\n  " + n;
  return s;
}

}  // namespace agenttune
