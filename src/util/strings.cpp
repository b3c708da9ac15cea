#include "agenttune/util/strings.h"

#include <algorithm>
#include <numeric>

namespace agenttune {

size_t levenshtein(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

namespace {
// True when every '_'-separated word of `key` is a word of `cand` (num_layers ->
// num_hidden_layers): a shortened name is a likelier intent than whatever is a few edits away.
bool words_subset(std::string_view key, std::string_view cand) {
  auto kw = split(key, '_');
  auto cw = split(cand, '_');
  if (kw.size() < 2 || kw.size() >= cw.size()) return false;
  return std::all_of(kw.begin(), kw.end(),
                     [&](const std::string& w) { return std::find(cw.begin(), cw.end(), w) != cw.end(); });
}
}  // namespace

std::string nearest(std::string_view key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = levenshtein(key, c);
    if (d < best_d) best_d = d, best = c;
  }
  // Beyond half the key's length the "suggestion" is noise.
  if (best_d <= std::max<size_t>(2, key.size() / 2)) return best;
  for (const auto& c : candidates)
    if (words_subset(key, c)) return c;
  return "";
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    out.emplace_back(s.substr(start, pos == std::string_view::npos ? s.size() - start : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

std::string join_counts(const std::map<std::string, int64_t>& counts, std::string_view sep) {
  std::string s;
  for (const auto& [k, v] : counts) {
    if (!s.empty()) s += sep;
    s += k + "=" + std::to_string(v);
  }
  return s;
}

std::string join_first(const std::vector<std::string>& items, size_t shown, std::string_view sep) {
  std::string s;
  for (size_t i = 0; i < items.size() && i <= shown; ++i) {
    if (i > 0) s += sep;
    s += i < shown ? items[i] : std::string("...");
  }
  return s;
}

}  // namespace agenttune
