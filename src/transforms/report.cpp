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

void TransformReport::short_of(std::string what, int64_t asked, int64_t made, std::string why) {
  if (made < asked) shortfalls.push_back({std::move(what), asked, made, std::move(why)});
}

namespace {
std::string describe(const std::string& transform, const Shortfall& s) {
  const double pct = 100.0 * static_cast<double>(s.asked - s.made) / static_cast<double>(s.asked);
  return fmt::format("{} made {} of the {} {} asked for ({:.0f}% short): {}", transform, s.made, s.asked,
                     s.what, pct, s.why);
}
}  // namespace

std::string TransformReport::summary() const {
  std::string s = transform + ":";
  for (const auto& [key, n] : counts) s += fmt::format(" {}={}", key, n);
  for (const auto& f : shortfalls) s += "\n  shortfall: " + describe(transform, f);
  for (const auto& n : notes) s += "\n  " + n;
  return s;
}

std::vector<std::string> TransformReport::shortfall_warnings(double share) const {
  std::vector<std::string> out;
  for (const auto& f : shortfalls)
    if (static_cast<double>(f.asked - f.made) > share * static_cast<double>(f.asked))
      out.push_back(describe(transform, f));
  return out;
}

}  // namespace agenttune
