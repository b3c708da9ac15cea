#include "agenttune/eval/heldout_loss.h"

#include <fmt/format.h>

#include <set>

#include "agenttune/eval/target_scores.h"
#include "agenttune/transforms/transforms.h"
#include "agenttune/util/error.h"

namespace agenttune::eval {

namespace {

constexpr const char* kUntagged = "untagged";

std::string capability_of(const Turn& t) { return t.capability.empty() ? kUntagged : t.capability; }

RenderedSample render(const ChatTemplate& tmpl, const Tokenizer& tok, const Conversation& c) {
  try {
    return tmpl.render(c, tok);
  } catch (const std::exception& e) {
    fail("held-out record {} ({} record {}, source {}): {}", c.id, c.file, c.record, c.source, e.what());
  }
}

// One scored sequence and which capability each of its scored tokens belongs to.
struct Piece {
  ScoredSequence seq;
  std::vector<std::string> capability;  // per scored token, in order
  size_t record = 0;
  bool aligned = false;
};

// `c` rendered, cut to max_len, with each trained token's capability: the conversation rendered
// again with only one capability's turns trained tells which tokens are that capability's (the ids
// do not depend on the loss flags).
Piece piece_of(const ChatTemplate& tmpl, const Tokenizer& tok, const Conversation& c, int64_t max_len,
               int64_t& tokens_cut) {
  const auto full = render(tmpl, tok, c);
  std::vector<std::string> cap_at(full.ids.size());
  std::set<std::string> caps;
  for (const auto& t : c.turns)
    if (trains(t)) caps.insert(capability_of(t));
  for (const auto& cap : caps) {
    Conversation only = c;
    for (auto& t : only.turns)
      if (trains(t) && capability_of(t) != cap) t.loss = false;
    const auto mask = caps.size() == 1 ? full.trained : render(tmpl, tok, only).trained;
    if (mask.size() != cap_at.size())
      fail("held-out record {}: template {} renders {} tokens with only {} turns trained but {} in full", c.id,
           tmpl.name(), mask.size(), cap, cap_at.size());
    for (size_t i = 0; i < mask.size(); ++i)
      if (mask[i]) cap_at[i] = cap;
  }
  Piece p;
  const auto n = std::min<size_t>(full.ids.size(), static_cast<size_t>(max_len));
  p.seq.ids.assign(full.ids.begin(), full.ids.begin() + static_cast<int64_t>(n));
  p.seq.scored.assign(full.trained.begin(), full.trained.begin() + static_cast<int64_t>(n));
  if (!p.seq.scored.empty()) p.seq.scored[0] = 0;  // BOS: nothing predicts it
  for (size_t i = n; i < full.ids.size(); ++i) tokens_cut += full.trained[i];
  for (size_t i = 0; i < n; ++i)
    if (p.seq.scored[i]) p.capability.push_back(cap_at[i].empty() ? kUntagged : cap_at[i]);
  return p;
}

void add(LossTally& t, int64_t tokens, double loss) {
  ++t.records;
  t.tokens += tokens;
  t.loss_sum += loss;
}

// The records decomposed by the Agent-FLAN chat alignment, every parseable one rewritten.
std::vector<Conversation> aligned(const std::vector<HeldOutRecord>& records, AlignConfig align) {
  align.enabled = true;
  align.keep_react_fraction = 0;
  align.sources.clear();  // the records are the agent data to decompose, whatever their source
  std::vector<Conversation> convs;
  for (const auto& r : records) convs.push_back(r.conv);
  TransformReport report{"align"};
  return align_to_chat(std::move(convs), align, report);
}

// Adds one piece's token scores to the tallies it belongs to.
void tally(const Piece& p, const HeldOutRecord& rec, const std::vector<double>& logprobs, bool capabilities_here,
           HeldOutLoss& out) {
  std::map<std::string, std::pair<int64_t, double>> per_cap;
  double loss = 0;
  for (size_t k = 0; k < logprobs.size(); ++k) {
    loss -= logprobs[k];
    auto& [n, l] = per_cap[p.capability[k]];
    ++n;
    l -= logprobs[k];
  }
  if (!p.aligned) {
    const auto tokens = static_cast<int64_t>(logprobs.size());
    add(out.total, tokens, loss);
    add(out.by_source[rec.conv.source], tokens, loss);
    add(out.by_task[task_name(rec.task)], tokens, loss);
  }
  if (capabilities_here)
    for (const auto& [cap, nl] : per_cap) add(out.by_capability[cap], nl.first, nl.second);
}

}  // namespace

HeldOutLoss heldout_loss(EvalModel& model, const ChatTemplate& tmpl, const Tokenizer& tok,
                         const std::vector<HeldOutRecord>& records, const HeldOutLossOptions& o) {
  const int64_t max_len = o.max_seq_len > 0 ? o.max_seq_len : model.config().max_position_embeddings;
  HeldOutLoss out;
  std::vector<Piece> pieces;
  for (size_t r = 0; r < records.size(); ++r) {
    pieces.push_back(piece_of(tmpl, tok, records[r].conv, max_len, out.tokens_cut));
    pieces.back().record = r;
  }
  if (o.align) {
    const auto convs = aligned(records, *o.align);
    for (size_t r = 0; r < convs.size(); ++r) {
      int64_t not_counted = 0;  // tokens_cut counts the records as given
      pieces.push_back(piece_of(tmpl, tok, convs[r], max_len, not_counted));
      pieces.back().record = r;
      pieces.back().aligned = true;
    }
  }
  std::vector<ScoredSequence> seqs;
  for (const auto& p : pieces) seqs.push_back(p.seq);
  const auto scores = score_targets(model, seqs, o.batch_size);
  for (size_t i = 0; i < pieces.size(); ++i)
    tally(pieces[i], records[pieces[i].record], scores.logprobs[i], pieces[i].aligned == o.align.has_value(), out);
  return out;
}

}  // namespace agenttune::eval
