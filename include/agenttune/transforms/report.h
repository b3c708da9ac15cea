#pragma once
// What each Agent-FLAN transform did, as named counts. Every transform that changes, drops or
// creates data says how much in its report, so a mixture can be audited from the logs alone.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agenttune {

// Capability tags written into Turn::capability (Agent-FLAN, ../shared/spec/recipes.md §4.3: the
// per-step thought, choosing the tool, filling its arguments / reading results, following a format).
namespace capability {
inline constexpr std::string_view reasoning = "reasoning";
inline constexpr std::string_view retrieval = "retrieval";
inline constexpr std::string_view understanding = "understanding";
inline constexpr std::string_view instruction_following = "instruction_following";
}  // namespace capability

// A shortfall larger than this share of what was asked is logged as a warning by prepare: a
// transform that made a few samples less than asked for is noise, one that made a quarter of them
// changes the mixture the config describes.
inline constexpr double kShortfallWarnShare = 0.10;

// What a setting asked a transform for and what the data allowed it to make, and why.
struct Shortfall {
  std::string what;  // "samples", "pairs", ...
  int64_t asked = 0;
  int64_t made = 0;
  std::string why;
};

struct TransformReport {
  TransformReport() = default;
  explicit TransformReport(std::string name) : transform(std::move(name)) {}

  std::string transform;                  // "align", "balance", "format_following", "negatives"
  std::map<std::string, int64_t> counts;  // keys are listed beside each transform (transforms.h)
  std::vector<std::string> notes;         // the first `max_notes` problems, in full
  size_t max_notes = 8;
  std::vector<Shortfall> shortfalls;      // only those with made < asked

  void add(const std::string& key, int64_t n = 1) { counts[key] += n; }
  // 0 for a key never added, so tests and callers need not know which counts were touched.
  int64_t get(const std::string& key) const;
  void note(std::string message);
  // Records a shortfall when made < asked.
  void short_of(std::string what, int64_t asked, int64_t made, std::string why);
  // One line: "align: conversations_rewritten=12 turns_rewritten=40 ..." plus a line per
  // shortfall and the notes.
  std::string summary() const;
  // One message per shortfall above `share` of what was asked, naming the transform, asked vs
  // made and why.
  std::vector<std::string> shortfall_warnings(double share = kShortfallWarnShare) const;
};

}  // namespace agenttune
