#pragma once
// Settings of the Agent-FLAN transforms, embeddable as `transforms:` in an SFT config through
// the project's visit() convention (config/reader.h). Defaults follow ../shared/spec/recipes.md §3.4:
// 10 % of agent conversations stay in ReAct form, reasoning : retrieval : understanding =
// 1 : 0.25 : 0.75, 2,000 format-following samples, negatives split half with tools, half without.
// The elicit and request phrasings are ours: the released Agent-FLAN wording is unverified.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace agenttune {

struct AlignConfig {
  bool enabled = true;
  uint64_t seed = 0;
  // Conversation::source names to rewrite; empty = every conversation. Naming the agent
  // datasets keeps stray "Action:" lines in general chat data from being rewritten.
  std::vector<std::string> sources;
  // Share of ReAct-bearing conversations kept verbatim (their ReAct turns are tagged
  // instruction_following) so the model can still produce ReAct when a prompt asks for it.
  double keep_react_fraction = 0.1;
  // User turns inserted between the pieces of one step; one phrasing per list is drawn per
  // conversation, so a conversation asks consistently and the corpus asks in varied ways.
  std::vector<std::string> tool_elicits = {"Which tool will you call?",
                                           "Which function do you want to use next?",
                                           "What API should be called for this?"};
  std::vector<std::string> action_elicits = {"Which action do you take next?",
                                             "What is your next action?",
                                             "What will you do now?"};
  std::vector<std::string> argument_elicits = {"With what arguments?",
                                               "What input do you give it?",
                                               "Please provide the parameters."};
  std::vector<std::string> answer_elicits = {"What is your final answer?",
                                             "So what is the answer?",
                                             "Please give the final answer."};
};

struct CapabilityWeights {
  // Share of trained turns of each capability that keep their loss (0..1).
  double reasoning = 1.0;
  double retrieval = 0.25;
  double understanding = 0.75;
  double instruction_following = 1.0;
};

struct BalanceConfig {
  bool enabled = true;
  uint64_t seed = 0;
  CapabilityWeights weights;
  // A conversation whose every trained turn was sub-sampled away would only add context
  // tokens; drop it (counted) rather than ship an example with nothing to learn.
  bool drop_untrained = true;
};

struct FormatFollowingConfig {
  bool enabled = true;
  uint64_t seed = 0;
  int64_t samples = 2000;     // at most this many (fewer when there are fewer distinct calls)
  double json_fraction = 0.5; // the rest ask for the tool name as plain text
  std::vector<std::string> json_requests = {
      "Reply with only a JSON object of the form {\"name\": <tool name>, \"arguments\": "
      "<arguments>} for the tool call you would make first, and nothing else.",
      "Answer in JSON only: give the first tool call as {\"name\": ..., \"arguments\": ...}."};
  std::vector<std::string> string_requests = {
      "Reply with only the name of the tool you would call first, as plain text.",
      "Which tool would you use first? Answer with the tool name alone, no other words."};
  std::string tools_header = "You can use the following tools:";
  std::string source = "format_following";  // Conversation::source of the generated samples
};

struct NegativePair {
  std::string query;
  std::string answer;  // a plain reply: no tool call, no ReAct keywords
};

struct NegativesConfig {
  bool enabled = true;
  uint64_t seed = 0;
  std::vector<NegativePair> pairs;
  // More pairs from a file: JSON Lines or a JSON array of {"query": ..., "answer": ...} (e.g. the
  // 761 ToolBench queries answered without tools); added after `pairs`.
  std::filesystem::path pairs_file;
  // Share of pairs shown with a ToolBench tool list in the system turn (kind b); the rest get
  // no tools (kind a). Agent-FLAN appended irrelevant tool lists to half of its 761 queries.
  double with_tools_fraction = 0.5;
  int64_t max_tools = 5;  // tools listed per kind-b sample, drawn from one ToolBench prompt
  std::string tools_header = "You can use the following tools:";
  std::string system_without_tools;  // system turn of kind-a samples; empty = none
  std::string source = "negatives";
};

struct TransformConfig {
  AlignConfig align;
  BalanceConfig balance;
  FormatFollowingConfig format_following;
  NegativesConfig negatives;
};

// Throws agenttune::Error naming the key (under `where`, e.g. "transforms") when a fraction or
// weight is outside [0, 1], a count is negative, or an enabled stage has no phrasings.
void validate(const TransformConfig& c, const std::string& where = "transforms");

template <class V>
void visit(V& v, AlignConfig& c) {
  v("enabled", c.enabled);
  v("seed", c.seed);
  v("sources", c.sources);
  v("keep_react_fraction", c.keep_react_fraction);
  v("tool_elicits", c.tool_elicits);
  v("action_elicits", c.action_elicits);
  v("argument_elicits", c.argument_elicits);
  v("answer_elicits", c.answer_elicits);
}

template <class V>
void visit(V& v, CapabilityWeights& w) {
  v("reasoning", w.reasoning);
  v("retrieval", w.retrieval);
  v("understanding", w.understanding);
  v("instruction_following", w.instruction_following);
}

template <class V>
void visit(V& v, BalanceConfig& c) {
  v("enabled", c.enabled);
  v("seed", c.seed);
  v.section("weights", c.weights);
  v("drop_untrained", c.drop_untrained);
}

template <class V>
void visit(V& v, FormatFollowingConfig& c) {
  v("enabled", c.enabled);
  v("seed", c.seed);
  v("samples", c.samples);
  v("json_fraction", c.json_fraction);
  v("json_requests", c.json_requests);
  v("string_requests", c.string_requests);
  v("tools_header", c.tools_header);
  v("source", c.source);
}

template <class V>
void visit(V& v, NegativePair& p) {
  v("query", p.query);
  v("answer", p.answer);
}

template <class V>
void visit(V& v, NegativesConfig& c) {
  v("enabled", c.enabled);
  v("seed", c.seed);
  v("pairs", c.pairs);
  v("pairs_file", c.pairs_file);
  v("with_tools_fraction", c.with_tools_fraction);
  v("max_tools", c.max_tools);
  v("tools_header", c.tools_header);
  v("system_without_tools", c.system_without_tools);
  v("source", c.source);
}

template <class V>
void visit(V& v, TransformConfig& c) {
  v.section("align", c.align);
  v.section("balance", c.balance);
  v.section("format_following", c.format_following);
  v.section("negatives", c.negatives);
}

}  // namespace agenttune
