#pragma once
// What happens to a conversation longer than the sequence it must fit (prepare's max_seq_len, the
// trainer's data.seq_len). One home for the rule, used by `prepare` (pieces become samples) and by
// the mixture (pieces become rows): a conversation is never split across rows, and no trained token
// is ever kept without the conversation's beginning (its system prompt, task protocol and task) in
// the same row. Peers agree on the first half (LLaMA-Factory truncates, axolotl drops and counts);
// `window` is what a long agent trajectory needs so its later answers are trained at all.
//
// The unit is the *answer*: a maximal run of trained tokens (mask 1), i.e. an assistant turn with
// its end-of-turn token. A cut is only ever made right after an answer.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agenttune/config/scalars.h"

namespace agenttune {

enum class Overlength {
  // Keep the leading turns up to the last whole answer that fits; dropped when even the first
  // answer does not fit.
  Truncate,
  // Drop the conversation (counted).
  Drop,
  // The first piece as `truncate`; then more pieces, each the conversation's head (everything up
  // to the end of its first answer: system prompt, task protocol, task, first answer; untrained
  // there) followed by the next turns that fit, so every answer that fits beside the head is trained
  // once, with its instructions in view. An answer too long to fit beside the head is skipped.
  Window,
};

template <>
struct EnumNames<Overlength> {
  static constexpr std::array<std::pair<Overlength, std::string_view>, 3> values = {
      {{Overlength::Truncate, "truncate"}, {Overlength::Drop, "drop"}, {Overlength::Window, "window"}}};
};

// One row's worth of a conversation: tokens [0, head) as untrained context, then [begin, end).
struct ConversationPiece {
  int64_t head = 0;
  int64_t begin = 0, end = 0;
  int64_t size() const { return head + end - begin; }
};

struct FittedConversation {
  std::vector<ConversationPiece> pieces;  // empty: dropped
  int64_t trained = 0;       // trained tokens of the whole conversation
  int64_t trained_kept = 0;  // of those, trained in some piece
  bool cut = false;          // longer than the limit (so truncated, windowed or dropped)
  bool dropped() const { return pieces.empty(); }
  int64_t trained_lost() const { return trained - trained_kept; }
};

// mask[t] = 1 when token t is a trained target (predicted from token t-1); mask[0] is never
// trained (nothing precedes it). max_len <= 0 means no limit.
FittedConversation fit_conversation(const uint8_t* mask, int64_t len, int64_t max_len, Overlength policy);

// What a policy did to a set of conversations, for prepare's, inspect's and the trainer's reports.
struct OverlengthCounts {
  int64_t conversations = 0;  // looked at
  int64_t over = 0;           // longer than the limit
  int64_t truncated = 0;      // over, kept as one piece
  int64_t windowed = 0;       // over, kept as several pieces
  int64_t extra_pieces = 0;   // pieces beyond the first, in all
  int64_t dropped = 0;        // over, dropped (by `drop`, or no whole answer fits)
  int64_t trained = 0;        // trained tokens looked at
  int64_t trained_lost = 0;   // of those, not trained in any piece
  void add(const FittedConversation& f);
  OverlengthCounts& operator+=(const OverlengthCounts& o);
  // "3 of 120 conversations longer than 256 tokens: 2 truncated, 1 dropped; 410 of 9,876 trained
  // tokens (4.2%) lost"; "" when nothing was over.
  std::string describe(int64_t max_len) const;
  double lost_share() const { return trained > 0 ? static_cast<double>(trained_lost) / static_cast<double>(trained) : 0; }
  double dropped_share() const {
    return conversations > 0 ? static_cast<double>(dropped) / static_cast<double>(conversations) : 0;
  }
};

// Above this share of trained tokens lost (or of conversations dropped) a run or a prepare warns
// instead of informing: a limit that silently costs a twentieth of the answers is a wrong limit.
inline constexpr double kOverlengthWarnShare = 0.05;

}  // namespace agenttune
