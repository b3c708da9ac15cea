// Negative samples (Agent-FLAN §4.4): the two cases positive agent data never shows, so the
// model stops calling tools that are absent or not needed (action hallucination) and stops
// answering in ReAct form unasked (format hallucination).
#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "agenttune/transforms/tool_list.h"
#include "agenttune/transforms/transforms.h"
#include "internal.h"

namespace agenttune {
namespace {

using namespace transforms_detail;

constexpr std::string_view kCallText[] = {"Thought:", "Action:", "Action Input:", "Act:",
                                          "Final Answer:", "function_call", "THOUGHT:", "ACTION:"};

bool has_call_text(std::string_view answer) {
  return std::any_of(std::begin(kCallText), std::end(kCallText),
                     [&](std::string_view k) { return answer.find(k) != std::string_view::npos; });
}

}  // namespace

std::vector<Conversation> make_negative_samples(const std::vector<Conversation>& tool_sources,
                                                const NegativesConfig& config,
                                                TransformReport& report) {
  validate_negatives(config, "negatives");
  // ToolBench repeats a trajectory's system prompt in each of its Step N records; counting a
  // prompt once keeps long trajectories from dominating the draw.
  std::vector<std::vector<ListedTool>> lists;
  std::set<uint64_t> seen;
  for (const Conversation& conv : tool_sources) {
    for (const Turn& t : conv.turns) {
      if (t.role != Role::System || !seen.insert(hash_text(t.content)).second) continue;
      ToolList list = parse_toolbench_tools(t.content);
      if (list.status == ToolListStatus::Failed) {
        report.add("tool_list_failures");
        report.note(fmt::format("{} (record {}): API list did not parse", conv.id, conv.record));
      }
      if (list.status == ToolListStatus::Partial) report.add("tool_list_partial");
      std::erase_if(list.tools, [](const ListedTool& s) { return s.name == "Finish"; });
      if (!list.tools.empty()) lists.push_back(std::move(list.tools));
    }
  }
  report.add("tool_lists", static_cast<int64_t>(lists.size()));

  std::vector<const NegativePair*> pairs;
  for (const NegativePair& p : config.pairs) {
    report.add("pairs");
    if (trim(p.query).empty() || trim(p.answer).empty() || has_call_text(p.answer)) {
      report.add("pairs_rejected");
      report.note(fmt::format("negative pair rejected (empty, or tool-call text in the answer): "
                              "{:.80}", p.query));
      continue;
    }
    pairs.push_back(&p);
  }

  report.short_of("pairs", static_cast<int64_t>(config.pairs.size()), static_cast<int64_t>(pairs.size()),
                  "pairs with an empty query or answer, or tool-call text in the answer, are "
                  "rejected (see pairs_rejected and the notes)");

  Rng rng(stage_seed(config.seed, "negatives"));
  rng.shuffle(pairs);
  const auto n_tools = static_cast<size_t>(share(config.with_tools_fraction, pairs.size()));
  if (lists.empty() && n_tools > 0) {
    report.add("with_tools_unavailable", static_cast<int64_t>(n_tools));
    report.short_of("samples with a tool list", static_cast<int64_t>(n_tools), 0,
                    "no ToolBench API list parsed from the transformed datasets' system turns, so "
                    "they became samples without tools");
  }

  std::vector<Conversation> out;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const bool with_tools = i < n_tools && !lists.empty();
    Conversation c;
    c.id = fmt::format("{}_{}_{}", config.source, with_tools ? "tools" : "no_tools", i);
    c.source = config.source;
    if (with_tools) {
      std::vector<ListedTool> tools = rng.pick(lists);
      rng.shuffle(tools);
      tools.resize(std::min(tools.size(), static_cast<size_t>(std::max<int64_t>(config.max_tools, 1))));
      c.turns.push_back(Turn{Role::System, render_tool_list(tools, config.tools_header), false, {}});
    } else if (!config.system_without_tools.empty()) {
      c.turns.push_back(Turn{Role::System, config.system_without_tools, false, {}});
    }
    c.turns.push_back(Turn{Role::User, std::string(trim(pairs[i]->query)), false, {}});
    c.turns.push_back(Turn{Role::Assistant, std::string(trim(pairs[i]->answer)), true, {}});
    report.add(with_tools ? "with_tools" : "no_tools");
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace agenttune
