// Chat-aligned rewrite of ReAct trajectories (Agent-FLAN §4.2; see transforms.h for the shape).
#include <fmt/format.h>

#include <algorithm>

#include "agenttune/transforms/react.h"
#include "agenttune/transforms/transforms.h"
#include "internal.h"

namespace agenttune {
namespace {

using namespace transforms_detail;

struct Elicits {
  std::string tool, action, arguments, answer;
};

// One phrasing per kind per conversation, from a stream keyed by the conversation's id and
// input position (the position keeps repeated ids, e.g. ToolBench "Step N" records, apart).
Elicits draw_elicits(const AlignConfig& c, uint64_t seed, const Conversation& conv, size_t index) {
  Rng rng(mix(mix(seed, hash_text(conv.id)), index));
  return {rng.pick(c.tool_elicits), rng.pick(c.action_elicits), rng.pick(c.argument_elicits),
          rng.pick(c.answer_elicits)};
}

Turn assistant(std::string content, std::string_view cap, const std::optional<bool>& loss) {
  return Turn{Role::Assistant, std::move(content), loss, std::string(cap)};
}

// Appends the pieces of one step; the first non-empty piece answers the turn before it, the
// others are each asked for by an elicit.
void emit_step(const ReactStep& s, const Turn& orig, const Elicits& e, std::vector<Turn>& out) {
  struct Piece {
    const std::string* text;
    std::string_view cap;
    const std::string* elicit;
  };
  std::vector<Piece> pieces{{&s.thought, capability::reasoning, nullptr}};
  if (s.kind == StepKind::Answer) {
    pieces.push_back({&s.answer, capability::understanding, &e.answer});
  } else {
    pieces.push_back({&s.action, capability::retrieval, s.tool_call ? &e.tool : &e.action});
    pieces.push_back({&s.arguments, capability::understanding, &e.arguments});
  }
  bool first = true;
  for (const auto& p : pieces) {
    if (p.text->empty()) continue;
    if (!first) out.push_back(Turn{Role::User, *p.elicit, false, {}});
    out.push_back(assistant(*p.text, p.cap, orig.loss));
    first = false;
  }
}

bool wanted(const AlignConfig& c, const Conversation& conv) {
  return c.sources.empty() ||
         std::find(c.sources.begin(), c.sources.end(), conv.source) != c.sources.end();
}

}  // namespace

std::vector<Conversation> align_to_chat(std::vector<Conversation> convs, const AlignConfig& config,
                                        TransformReport& report) {
  validate_align(config, "align");
  const uint64_t seed = stage_seed(config.seed, "align");
  // Parse every assistant turn once; the keep-ReAct draw needs to know which conversations
  // have anything to rewrite.
  enum class Treatment { Skip, NoReact, Rewrite, KeepReact };
  std::vector<std::vector<ReactParse>> parses(convs.size());
  std::vector<Treatment> treatment(convs.size(), Treatment::Skip);
  std::vector<size_t> candidates;
  for (size_t i = 0; i < convs.size(); ++i) {
    report.add("conversations");
    if (!wanted(config, convs[i])) {
      report.add("conversations_skipped_source");
      continue;
    }
    treatment[i] = Treatment::NoReact;
    for (const Turn& t : convs[i].turns) {
      parses[i].push_back(t.role == Role::Assistant ? parse_react(t.content) : ReactParse{});
      if (parses[i].back().match == ReactMatch::Parsed) treatment[i] = Treatment::Rewrite;
    }
    if (treatment[i] == Treatment::Rewrite) candidates.push_back(i);
    else report.add("conversations_without_react");
  }
  Rng rng(seed);
  rng.shuffle(candidates);
  const int64_t n_keep = share(config.keep_react_fraction, candidates.size());
  for (int64_t k = 0; k < n_keep; ++k) treatment[candidates[static_cast<size_t>(k)]] = Treatment::KeepReact;

  for (size_t i = 0; i < convs.size(); ++i) {
    Conversation& conv = convs[i];
    if (treatment[i] == Treatment::Skip) {
      report.add("turns_out", static_cast<int64_t>(conv.turns.size()));
      continue;
    }
    // A conversation with nothing parseable is left as it is, its odd turns still counted.
    const bool rewrite = treatment[i] == Treatment::Rewrite;
    const bool keep = treatment[i] == Treatment::KeepReact;
    const Elicits elicits = draw_elicits(config, seed, conv, i);
    std::vector<Turn> out;
    for (size_t t = 0; t < conv.turns.size(); ++t) {
      Turn& turn = conv.turns[t];
      const ReactParse& p = parses[i][t];
      if (turn.role == Role::Assistant && p.match == ReactMatch::Unparseable) {
        report.add("turns_unparseable");
        report.note(fmt::format("{} (record {}) turn {}: ReAct markers but no known shape: {:.120}",
                                conv.id, conv.record, t, turn.content));
      } else if (turn.role == Role::Assistant && p.match == ReactMatch::NotReact) {
        report.add("turns_plain");
      } else if (turn.role == Role::Assistant && keep) {
        report.add("turns_kept_react");
        turn.capability = std::string(capability::instruction_following);
      } else if (turn.role == Role::Assistant && rewrite) {
        report.add("turns_rewritten");
        report.add(p.step.kind == StepKind::Answer ? "answers" : "calls");
        emit_step(p.step, turn, elicits, out);
        continue;
      } else if (turn.role == Role::Tool && rewrite) {
        report.add("observations_to_user");
        turn.role = Role::User;
      }
      out.push_back(std::move(turn));
    }
    conv.turns = std::move(out);
    if (rewrite) report.add("conversations_rewritten");
    if (keep) report.add("conversations_kept_react");
    report.add("turns_out", static_cast<int64_t>(conv.turns.size()));
  }
  return convs;
}

}  // namespace agenttune
