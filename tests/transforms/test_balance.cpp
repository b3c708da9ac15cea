// Capability balancing: exact seeded shares per capability, context kept, reports consistent.
#include <gtest/gtest.h>

#include <map>

#include "agenttune/transforms/transforms.h"
#include "agenttune/util/error.h"
#include "transform_test_util.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;

// n conversations of one step each (reasoning, retrieval, understanding turns, all trained),
// every tenth with an untagged trained reply and an untrained reasoning turn.
std::vector<Conversation> synthetic(size_t n) {
  std::vector<Conversation> v;
  for (size_t i = 0; i < n; ++i) {
    std::vector<Turn> t = {user("q"), asst("think " + std::to_string(i), true, "reasoning"),
                           user("Which tool?", false), asst("tool", true, "retrieval"),
                           user("Arguments?", false), asst("{}", std::nullopt, "understanding")};
    if (i % 10 == 0) {
      t.push_back(user("more"));
      t.push_back(asst("plain reply", true));
      t.push_back(user("and?"));
      t.push_back(asst("example only", false, "reasoning"));
    }
    v.push_back(conv("c" + std::to_string(i), std::move(t)));
  }
  return v;
}

std::map<std::string, int64_t> trained_by_capability(const std::vector<Conversation>& v) {
  std::map<std::string, int64_t> m;
  for (const auto& c : v)
    for (const auto& t : c.turns)
      if (trains(t)) ++m[t.capability];
  return m;
}

std::vector<bool> loss_pattern(const std::vector<Conversation>& v) {
  std::vector<bool> out;
  for (const auto& c : v)
    for (const auto& t : c.turns) out.push_back(trains(t));
  return out;
}

TEST(Balance, DefaultWeightsHoldOnThousandsOfTurns) {
  auto input = synthetic(3000);
  BalanceConfig cfg;
  cfg.drop_untrained = false;
  auto v = input;
  TransformReport rep{"balance"};
  balance_capabilities(v, cfg, rep);
  auto m = trained_by_capability(v);
  EXPECT_EQ(m["reasoning"], 3000);
  EXPECT_EQ(m["retrieval"], 750);
  EXPECT_EQ(m["understanding"], 2250);
  EXPECT_EQ(m[""], 300);  // untagged turns are not balanced
  EXPECT_NEAR(double(m["retrieval"]) / m["reasoning"], 0.25, 0.01);
  EXPECT_NEAR(double(m["understanding"]) / m["reasoning"], 0.75, 0.01);
  EXPECT_EQ(rep.get("reasoning.trained"), 3000);
  EXPECT_EQ(rep.get("reasoning.dropped"), 0);
  EXPECT_EQ(rep.get("retrieval.kept"), 750);
  EXPECT_EQ(rep.get("retrieval.dropped"), 2250);
  EXPECT_EQ(rep.get("understanding.dropped"), 750);
  EXPECT_EQ(rep.get("conversations_out"), 3000);
  // Dropped turns stay as context, text unchanged.
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_EQ(v[i].turns.size(), input[i].turns.size());
    for (size_t t = 0; t < v[i].turns.size(); ++t) ASSERT_EQ(v[i].turns[t].content, input[i].turns[t].content);
  }
  // The selection is spread over the corpus, not the first 750 conversations.
  int64_t retrieval_in_second_half = 0;
  for (size_t i = 1500; i < v.size(); ++i) retrieval_in_second_half += trains(v[i].turns[3]);
  EXPECT_NEAR(double(retrieval_in_second_half), 375.0, 60.0);
}

TEST(Balance, DeterministicPerSeed) {
  BalanceConfig cfg;
  auto a = synthetic(2000), b = synthetic(2000), c = synthetic(2000);
  TransformReport ra{"balance"}, rb{"balance"}, rc{"balance"};
  balance_capabilities(a, cfg, ra);
  balance_capabilities(b, cfg, rb);
  cfg.seed = 1;
  balance_capabilities(c, cfg, rc);
  EXPECT_EQ(loss_pattern(a), loss_pattern(b));
  EXPECT_NE(loss_pattern(a), loss_pattern(c));
  EXPECT_EQ(ra.counts, rb.counts);
}

TEST(Balance, DropsConversationsLeftWithoutTrainedTurns) {
  std::vector<Conversation> v;
  for (int i = 0; i < 400; ++i)
    v.push_back(conv("r" + std::to_string(i), {user("Which tool?"), asst("tool", true, "retrieval")}));
  v.push_back(conv("ctx", {user("q"), asst("never trained", false, "retrieval")}));
  BalanceConfig cfg;
  TransformReport rep{"balance"};
  balance_capabilities(v, cfg, rep);
  EXPECT_EQ(rep.get("retrieval.kept"), 100);
  EXPECT_EQ(rep.get("conversations_dropped_untrained"), 300);
  EXPECT_EQ(rep.get("conversations_out"), 101);  // the one that never trained is not balancing's doing
  ASSERT_EQ(v.size(), 101u);
}

TEST(Balance, RejectsWeightsOutsideZeroOne) {
  std::vector<Conversation> v;
  BalanceConfig cfg;
  cfg.weights.retrieval = 1.5;
  TransformReport rep{"balance"};
  EXPECT_THROW(balance_capabilities(v, cfg, rep), Error);
  TransformConfig all;
  all.balance.weights.understanding = -0.1;
  EXPECT_THROW(validate(all), Error);
  all.balance.enabled = false;
  EXPECT_NO_THROW(validate(all));
}

TEST(Balance, AfterAlignTheTrainedShareFollowsTheWeights) {
  std::vector<Conversation> v;
  for (int i = 0; i < 2000; ++i)
    v.push_back(conv("tb" + std::to_string(i),
                     {user("q"), asst("Thought: t\nAction: f\nAction Input: {\"a\": 1}"), tool("r"),
                      asst("Thought: t2\nAction: g\nAction Input: {}")}));
  TransformReport ra{"align"}, rb{"balance"};
  AlignConfig acfg;
  acfg.keep_react_fraction = 0;
  v = align_to_chat(std::move(v), acfg, ra);
  balance_capabilities(v, BalanceConfig{}, rb);
  auto m = trained_by_capability(v);
  EXPECT_EQ(m["reasoning"], 4000);
  EXPECT_NEAR(double(m["retrieval"]) / m["reasoning"], 0.25, 0.005);
  EXPECT_NEAR(double(m["understanding"]) / m["reasoning"], 0.75, 0.005);
}

}  // namespace
}  // namespace agenttune
