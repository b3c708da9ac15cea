// Format-following samples, negative samples, the whole pipeline, and the config's keys.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>

#include "agenttune/transforms/react.h"
#include "agenttune/transforms/transforms.h"
#include "agenttune/util/error.h"
#include "transform_test_util.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;

// ToolBench SFT style: a trajectory appears once per step, repeating its opening.
std::vector<Conversation> toolbench_records(int queries) {
  std::vector<Conversation> v;
  for (int q = 0; q < queries; ++q) {
    std::string query = "\nTemperature in city " + std::to_string(q) + "?\nBegin!\n";
    std::string call = "\nThought: look it up\nAction: current_for_weatherly\nAction Input: "
                       "{\"city\": \"C" + std::to_string(q) + "\"}";
    v.push_back(conv("Step 1: " + std::to_string(q), {sys(kToolBenchSystem), user(query), asst(call)}, "toolbench"));
    v.push_back(conv("Step 2: " + std::to_string(q),
                     {sys(kToolBenchSystem), user(query), asst(call, false), tool("{\"response\": \"3\"}"),
                      asst("\nThought: \nAction: Finish\nAction Input: {\"return_type\": \"give_answer\", "
                           "\"final_answer\": \"3 degrees.\"}", true)}, "toolbench"));
  }
  return v;
}

bool has_call_text(const std::string& s) {
  for (const char* k : {"Thought:", "Action:", "Action Input:", "Final Answer:", "function_call"})
    if (s.find(k) != std::string::npos) return true;
  return false;
}

TEST(FormatFollowing, JsonAndStringSamplesFromToolCalls) {
  auto input = toolbench_records(4);
  input.push_back(conv("plain", {user("hi"), asst("hello")}, "sharegpt"));
  input.push_back(conv("broken", {sys("you have access to the following APIs: [{'name"), user("q"),
                                  asst("Thought: t\nAction: a\nAction Input: {}")}, "toolbench"));
  FormatFollowingConfig cfg;
  cfg.samples = 10;
  cfg.json_requests = {"JSON please."};
  cfg.string_requests = {"Name only."};
  TransformReport rep{"format_following"};
  auto out = make_format_samples(input, cfg, rep);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(rep.get("candidates"), 4);
  EXPECT_EQ(rep.get("duplicates"), 4);
  EXPECT_EQ(rep.get("shortfall"), 6);
  EXPECT_EQ(rep.get("json"), 2);
  EXPECT_EQ(rep.get("string"), 2);
  EXPECT_EQ(rep.get("tool_list_failures"), 1);
  EXPECT_EQ(rep.get("conversations_scanned"), 10);
  for (const auto& s : out) {
    ASSERT_EQ(s.turns.size(), 3u);
    EXPECT_EQ(s.source, "format_following");
    EXPECT_EQ(s.turns[0].role, Role::System);
    EXPECT_EQ(s.turns[0].content,
              "You can use the following tools:\n- current_for_weatherly: This is the subfunction for tool "
              "\"weatherly\": current conditions for a city.\n- convert_for_unitsmith: Converts a value "
              "between units.");
    const Turn& a = s.turns[2];
    EXPECT_TRUE(trains(a));
    EXPECT_EQ(a.capability, "instruction_following");
    const std::string& u = s.turns[1].content;
    EXPECT_TRUE(u.starts_with("Temperature in city ")) << u;
    EXPECT_EQ(u.find("Begin!"), std::string::npos);
    std::string city = "C" + u.substr(20, 1);
    if (u.ends_with("\n\nJSON please.")) {
      EXPECT_EQ(a.content, "{\"name\":\"current_for_weatherly\",\"arguments\":{\"city\":\"" + city + "\"}}");
    } else {
      EXPECT_TRUE(u.ends_with("\n\nName only.")) << u;
      EXPECT_EQ(a.content, "current_for_weatherly");
    }
  }
  // Same seed, same samples.
  TransformReport rep2{"format_following"};
  auto again = make_format_samples(input, cfg, rep2);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].id, again[i].id);
}

NegativesConfig negatives_config(int pairs) {
  NegativesConfig cfg;
  for (int i = 0; i < pairs; ++i)
    cfg.pairs.push_back({"What does ETA mean? (" + std::to_string(i) + ")", "Estimated time of arrival."});
  cfg.pairs.push_back({"Weather in Oslo?", "Thought: call it\nAction: weather"});  // a call: rejected
  cfg.pairs.push_back({"  ", "empty query"});                                      // rejected
  cfg.max_tools = 2;
  return cfg;
}

TEST(Negatives, BothKindsWellFormed) {
  auto sources = toolbench_records(3);
  sources.push_back(conv("broken", {sys("you have access to the following APIs: [{'nam"), user("q")}));
  NegativesConfig cfg = negatives_config(10);
  TransformReport rep{"negatives"};
  auto out = make_negative_samples(sources, cfg, rep);
  ASSERT_EQ(out.size(), 10u);
  EXPECT_EQ(rep.get("pairs"), 12);
  EXPECT_EQ(rep.get("pairs_rejected"), 2);
  EXPECT_EQ(rep.get("with_tools"), 5);
  EXPECT_EQ(rep.get("no_tools"), 5);
  EXPECT_EQ(rep.get("tool_lists"), 1);  // one distinct prompt, repeated in every record
  EXPECT_EQ(rep.get("tool_list_failures"), 1);
  const std::set<std::string> offered = {"current_for_weatherly", "convert_for_unitsmith"};
  for (const auto& c : out) {
    const Turn& answer = c.turns.back();
    EXPECT_EQ(answer.role, Role::Assistant);
    EXPECT_TRUE(trains(answer));
    EXPECT_FALSE(has_call_text(answer.content));
    EXPECT_EQ(parse_react(answer.content).match, ReactMatch::NotReact);
    EXPECT_EQ(c.turns[c.turns.size() - 2].role, Role::User);
    if (c.id.find("_tools_") != std::string::npos && c.id.find("no_tools") == std::string::npos) {
      ASSERT_EQ(c.turns.size(), 3u);
      const std::string& s = c.turns[0].content;
      ASSERT_TRUE(s.starts_with(cfg.tools_header)) << s;
      EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 2);  // max_tools = 2 lines
      EXPECT_EQ(s.find("Finish"), std::string::npos);
      for (const auto& name : offered)
        EXPECT_NE(s.find("- " + name), std::string::npos) << s;
    } else {
      ASSERT_EQ(c.turns.size(), 2u);  // no tools, no system turn
    }
  }
  TransformReport rep2{"negatives"};
  auto again = make_negative_samples(sources, cfg, rep2);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i].turns.back().content, again[i].turns.back().content);
}

TEST(Negatives, WithoutToolListsEverythingIsKindA) {
  NegativesConfig cfg = negatives_config(4);
  cfg.system_without_tools = "You are a helpful assistant.";
  TransformReport rep{"negatives"};
  auto out = make_negative_samples({}, cfg, rep);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(rep.get("no_tools"), 4);
  EXPECT_EQ(rep.get("with_tools_unavailable"), 2);
  for (const auto& c : out) EXPECT_EQ(c.turns[0].content, "You are a helpful assistant.");
}

TEST(Pipeline, CountsAddUp) {
  auto input = toolbench_records(20);
  input.push_back(conv("chat", {user("hi"), asst("hello")}, "sharegpt"));
  TransformConfig cfg;
  cfg.align.sources = {"toolbench"};
  cfg.format_following.samples = 5;
  cfg.negatives = negatives_config(6);
  TransformReports reps;
  auto out = apply_transforms(input, cfg, reps);
  EXPECT_EQ(reps.format_following.get("json") + reps.format_following.get("string"), 5);
  EXPECT_EQ(reps.negatives.get("no_tools") + reps.negatives.get("with_tools"), 6);
  EXPECT_EQ(reps.align.get("conversations_kept_react"), 4);  // 10 % of 40 records
  EXPECT_EQ(static_cast<int64_t>(out.size()),
            41 + 5 - reps.balance.get("conversations_dropped_untrained") + 6);
  EXPECT_EQ(reps.balance.get("conversations_out") + 6, static_cast<int64_t>(out.size()));
  EXPECT_EQ(reps.balance.get("instruction_following.dropped"), 0);
  EXPECT_NE(reps.align.summary().find("conversations_rewritten=36"), std::string::npos)
      << reps.align.summary();
}

// Records the keys a visit() offers, the way the config reader and writer walk a struct.
struct KeyRecorder {
  std::vector<std::string> keys;
  std::string prefix;
  template <class T>
  void operator()(std::string_view key, T&) { keys.push_back(prefix + std::string(key)); }
  template <class S>
  void section(std::string_view key, S& s) {
    std::string saved = prefix;
    prefix += std::string(key) + ".";
    visit(*this, s);
    prefix = saved;
  }
};

TEST(TransformConfig, VisitOffersEveryKey) {
  TransformConfig c;
  KeyRecorder r;
  visit(r, c);
  const std::vector<std::string> want = {
      "align.enabled", "align.seed", "align.sources", "align.keep_react_fraction",
      "align.tool_elicits", "align.action_elicits", "align.argument_elicits", "align.answer_elicits",
      "balance.enabled", "balance.seed", "balance.weights.reasoning", "balance.weights.retrieval",
      "balance.weights.understanding", "balance.weights.instruction_following",
      "balance.drop_untrained", "format_following.enabled", "format_following.seed",
      "format_following.samples", "format_following.json_fraction",
      "format_following.json_requests", "format_following.string_requests",
      "format_following.tools_header", "format_following.source", "negatives.enabled",
      "negatives.seed", "negatives.pairs", "negatives.pairs_file", "negatives.with_tools_fraction", "negatives.max_tools",
      "negatives.tools_header", "negatives.system_without_tools", "negatives.source"};
  EXPECT_EQ(r.keys, want);
  KeyRecorder p;
  NegativePair pair;
  visit(p, pair);
  EXPECT_EQ(p.keys, (std::vector<std::string>{"query", "answer"}));
  EXPECT_NO_THROW(validate(c));
  c.align.answer_elicits.clear();
  EXPECT_THROW(validate(c), Error);
}

}  // namespace
}  // namespace agenttune
