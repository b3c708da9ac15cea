#pragma once
// The Agent-FLAN data transforms (../shared/spec/recipes.md §3.4, §4): pure functions on
// conversations, no file IO. Each reports its counts in a TransformReport (keys listed below).
#include <vector>

#include "agenttune/chat/conversation.h"
#include "agenttune/transforms/report.h"
#include "agenttune/transforms/transform_config.h"

namespace agenttune {

// Chat-aligned rewrite. Each parseable ReAct assistant turn becomes
//   assistant <thought>                      capability reasoning
//   user      <tool or action elicit>
//   assistant <tool/action name>             capability retrieval
//   user      <argument elicit>              (only when the step has arguments)
//   assistant <arguments>                    capability understanding
// or, for a final answer, <thought> / user <answer elicit> / assistant <answer> (understanding:
// it was Finish's Action Input and restates what the observations said). An empty thought is
// left out and the next piece follows the preceding user turn directly, so roles still
// alternate. Derived assistant turns keep the original turn's loss flag; elicits get false.
// Tool turns (ToolBench observations) become user turns. Turns with ReAct markers that do not
// parse stay verbatim (counted); plain turns ("Ok.") stay verbatim.
// A seeded `keep_react_fraction` of the conversations that hold a parseable turn is kept in
// ReAct form, its parseable assistant turns tagged instruction_following.
// Counts: conversations, conversations_skipped_source, conversations_without_react,
// conversations_rewritten, conversations_kept_react, turns_rewritten, turns_kept_react,
// turns_unparseable, turns_plain, calls, answers, observations_to_user, turns_out.
std::vector<Conversation> align_to_chat(std::vector<Conversation> conversations,
                                        const AlignConfig& config, TransformReport& report);

// Capability balancing: for each capability the trained assistant turns carrying that tag are
// shuffled (seeded) and all but round(weight * n) get loss=false; their text stays as context.
// Untagged turns are untouched. Throws agenttune::Error for a weight outside [0, 1].
// Counts: <capability>.trained, <capability>.kept, <capability>.dropped (per tag seen),
// turns_other_capability (tags outside the four), conversations_dropped_untrained,
// conversations_out.
void balance_capabilities(std::vector<Conversation>& conversations, const BalanceConfig& config,
                          TransformReport& report);

// Format-following samples from ToolBench tool calls (run on ReAct data, before the rewrite).
// For a conversation whose system turn lists APIs, take the first assistant step after the
// first user turn when it is a ToolBench call (not Finish); distinct (query, call) pairs are
// shuffled (seeded) and up to `samples` become
//   system    tools_header + "- name: description" lines (Finish left out)
//   user      <query, "Begin!" removed> + "\n\n" + <a json or string request>
//   assistant JSON kind:   {"name":"<tool>","arguments":<arguments as JSON, else as a string>}
//             string kind: <tool>                  (capability instruction_following, loss true)
// Counts: conversations_scanned, tool_list_failures, tool_list_partial, no_call, duplicates,
// candidates, json, string, shortfall (samples asked for but not available).
std::vector<Conversation> make_format_samples(const std::vector<Conversation>& conversations,
                                              const FormatFollowingConfig& config,
                                              TransformReport& report);

// Negative samples (Agent-FLAN §4.4) from the configured {query, answer} pairs: kind a = no
// tools offered (optional plain system turn) + query -> plain answer; kind b = system turn
// listing up to max_tools tools of one ToolBench prompt found in `tool_sources` + query ->
// plain answer. Pairs whose answer holds tool-call text (Thought:/Action:/Action Input:/Act:/
// Final Answer:/function_call) or that are empty are rejected. When no tool list parses, every
// pair becomes kind a (counted in with_tools_unavailable).
// Counts: pairs, pairs_rejected, tool_lists, tool_list_failures, tool_list_partial,
// no_tools, with_tools, with_tools_unavailable.
std::vector<Conversation> make_negative_samples(const std::vector<Conversation>& tool_sources,
                                                const NegativesConfig& config,
                                                TransformReport& report);

struct TransformReports {
  TransformReport align{"align"};
  TransformReport balance{"balance"};
  TransformReport format_following{"format_following"};
  TransformReport negatives{"negatives"};
};

// The whole Agent-FLAN pass: format samples and negatives' tool lists come from the input as
// read; then align; the format samples are appended and the result is balanced (so the
// instruction_following weight also governs them); negatives are appended last (untagged, so
// never sub-sampled). Disabled stages are skipped. Validates the config first.
std::vector<Conversation> apply_transforms(std::vector<Conversation> conversations,
                                           const TransformConfig& config,
                                           TransformReports& reports);

}  // namespace agenttune
