#include "agenttune/data/overlength.h"

#include <fmt/format.h>

namespace agenttune {

namespace {

struct Answer {
  int64_t begin, end;  // [begin, end): a maximal run of trained tokens
};

std::vector<Answer> answers_of(const uint8_t* mask, int64_t len) {
  std::vector<Answer> out;
  for (int64_t t = 1; t < len; ++t) {
    if (mask[t] == 0) continue;
    if (!out.empty() && out.back().end == t) {
      out.back().end = t + 1;
    } else {
      out.push_back({t, t + 1});
    }
  }
  return out;
}

int64_t trained_in(const std::vector<Answer>& a, size_t from, size_t to) {
  int64_t n = 0;
  for (size_t i = from; i < to; ++i) n += a[i].end - a[i].begin;
  return n;
}

// The later pieces of `window`: the head, then from `start` (a turn boundary right after answer
// `next - 1`) as many whole answers as fit.
void add_windows(FittedConversation& f, const std::vector<Answer>& a, size_t next, int64_t max_len) {
  const int64_t head = a.front().end;
  int64_t start = a[next - 1].end;
  while (next < a.size()) {
    size_t last = next;  // one past the last answer that fits beside the head
    while (last < a.size() && head + (a[last].end - start) <= max_len) ++last;
    if (last == next) {
      // This answer (with its turn) cannot fit beside the head: it is skipped, not cut.
      start = a[next].end;
      ++next;
      continue;
    }
    f.pieces.push_back({head, start, a[last - 1].end});
    f.trained_kept += trained_in(a, next, last);
    start = a[last - 1].end;
    next = last;
  }
}

}  // namespace

FittedConversation fit_conversation(const uint8_t* mask, int64_t len, int64_t max_len, Overlength policy) {
  FittedConversation f;
  const auto a = answers_of(mask, len);
  f.trained = trained_in(a, 0, a.size());
  if (max_len <= 0 || len <= max_len) {
    f.pieces.push_back({0, 0, len});
    f.trained_kept = f.trained;
    return f;
  }
  f.cut = true;
  if (policy == Overlength::Drop) return f;
  size_t fit = 0;  // answers that fit from the start
  while (fit < a.size() && a[fit].end <= max_len) ++fit;
  if (fit == 0) return f;  // not even the first answer: nothing could be trained with its prompt
  f.pieces.push_back({0, 0, a[fit - 1].end});
  f.trained_kept = trained_in(a, 0, fit);
  if (policy == Overlength::Window) add_windows(f, a, fit, max_len);
  return f;
}

void OverlengthCounts::add(const FittedConversation& f) {
  ++conversations;
  trained += f.trained;
  trained_lost += f.trained_lost();
  if (!f.cut) return;
  ++over;
  if (f.dropped()) {
    ++dropped;
  } else if (f.pieces.size() == 1) {
    ++truncated;
  } else {
    ++windowed;
    extra_pieces += static_cast<int64_t>(f.pieces.size()) - 1;
  }
}

OverlengthCounts& OverlengthCounts::operator+=(const OverlengthCounts& o) {
  conversations += o.conversations;
  over += o.over;
  truncated += o.truncated;
  windowed += o.windowed;
  extra_pieces += o.extra_pieces;
  dropped += o.dropped;
  trained += o.trained;
  trained_lost += o.trained_lost;
  return *this;
}

std::string OverlengthCounts::describe(int64_t max_len) const {
  if (over == 0) return "";
  std::string what;
  auto part = [&](int64_t n, const std::string& text) {
    if (n > 0) what += fmt::format("{}{} {}", what.empty() ? "" : ", ", n, text);
  };
  part(truncated, "truncated to their last whole answer");
  part(windowed, fmt::format("windowed into {} more piece(s)", extra_pieces));
  part(dropped, "dropped");
  return fmt::format("{} of {} conversation(s) longer than {} tokens: {}; {} of {} trained tokens ({:.1f}%) lost",
                     over, conversations, max_len, what, trained_lost, trained, 100.0 * lost_share());
}

}  // namespace agenttune
