// The chat-aligned rewrite: exact turns per source style, unparseable turns, the ReAct-kept share.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "agenttune/transforms/transforms.h"
#include "transform_test_util.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;
const std::string R(capability::reasoning), T(capability::retrieval), U(capability::understanding),
    F(capability::instruction_following);

std::vector<Turn> align_one(Conversation c, TransformReport& rep) {
  auto out = align_to_chat({std::move(c)}, fixed_align(), rep);
  EXPECT_EQ(out.size(), 1u);
  return out.empty() ? std::vector<Turn>{} : out[0].turns;
}

TEST(Align, ToolBenchTrajectory) {
  const std::string obs = "{\"error\": \"\", \"response\": \"{'temp_c': 3}\"}";
  Conversation c = conv("Step 2: temp", {sys(kToolBenchSystem), user("\nTemp in Reykjavik?\nBegin!\n"),
      asst("\nThought: I need the current conditions.\nAction: current_for_weatherly\n"
           "Action Input: {\n  \"city\": \"Reykjavik\"\n}", false),
      tool(obs),
      asst("\nThought: \nAction: Finish\nAction Input: {\"return_type\": \"give_answer\", "
           "\"final_answer\": \"It is 3 C in Reykjavik.\"}", true)});
  TransformReport rep{"align"};
  expect_turns(align_one(c, rep),
               {sys(kToolBenchSystem), user("\nTemp in Reykjavik?\nBegin!\n"),
                asst("I need the current conditions.", false, R), user("Which tool?", false),
                asst("current_for_weatherly", false, T), user("Arguments?", false),
                asst("{\n  \"city\": \"Reykjavik\"\n}", false, U),
                user(obs),  // the observation, now a user turn; the empty thought is left out
                asst("It is 3 C in Reykjavik.", true, U)});
  EXPECT_EQ(rep.get("turns_rewritten"), 2);
  EXPECT_EQ(rep.get("calls"), 1);
  EXPECT_EQ(rep.get("answers"), 1);
  EXPECT_EQ(rep.get("observations_to_user"), 1);
  EXPECT_EQ(rep.get("conversations_rewritten"), 1);
  EXPECT_EQ(rep.get("turns_out"), 9);
  EXPECT_EQ(rep.get("turns_unparseable"), 0);
}

TEST(Align, OperatingSystem) {
  TransformReport rep{"align"};
  expect_turns(
      align_one(conv("os_12", {user("Protocol: Think/Act."), asst("Ok.", false), user("How many?"),
                               asst("Think: count.\n\nAct: bash\n\n```bash\nls | wc -l\n```", true),
                               user("The output of the OS:\n\n7"),
                               asst("Think: it is 7.\n\nAct: answer(7)", true),
                               user("Now clean up."), asst("Think: nothing to do.\n\nAct: finish", true)}),
                rep),
      {user("Protocol: Think/Act."), asst("Ok.", false), user("How many?"), asst("count.", true, R),
       user("Which action?", false), asst("bash", true, T), user("Arguments?", false),
       asst("```bash\nls | wc -l\n```", true, U), user("The output of the OS:\n\n7"),
       asst("it is 7.", true, R), user("Answer?", false), asst("7", true, U), user("Now clean up."),
       asst("nothing to do.", true, R), user("Which action?", false), asst("finish", true, T)});
  EXPECT_EQ(rep.get("turns_plain"), 1);
  EXPECT_EQ(rep.get("turns_rewritten"), 3);
}

TEST(Align, Database) {
  TransformReport rep{"align"};
  expect_turns(align_one(conv("db_88", {user("Which two cities?"),
                                        asst("Group by city.\nAction: Operation\n```sql\nSELECT 1;\n```", true),
                                        user("[('Lisbon', 41), ('Porto', 29)]"),
                                        asst("Lisbon and Porto.\nAction: Answer\nFinal Answer: [\"Lisbon\", \"Porto\"]", true)}),
                         rep),
               {user("Which two cities?"), asst("Group by city.", true, R), user("Which action?", false),
                asst("Operation", true, T), user("Arguments?", false), asst("```sql\nSELECT 1;\n```", true, U),
                user("[('Lisbon', 41), ('Porto', 29)]"), asst("Lisbon and Porto.", true, R),
                user("Answer?", false), asst("[\"Lisbon\", \"Porto\"]", true, U)});
}

TEST(Align, KnowledgeGraph) {
  TransformReport rep{"align"};
  expect_turns(align_one(conv("kg_1", {user("Who?"), asst("Thought: relations.\nAction: get_relations(Barack Obama)", true),
                                       user("Observation: [people.person.spouse]"),
                                       asst("Thought: #0 answers it.\nFinal Answer: #0", true)}),
                         rep),
               {user("Who?"), asst("relations.", true, R), user("Which action?", false),
                asst("get_relations", true, T), user("Arguments?", false), asst("Barack Obama", true, U),
                user("Observation: [people.person.spouse]"), asst("#0 answers it.", true, R),
                user("Answer?", false), asst("#0", true, U)});
}

TEST(Align, AlfWorldKeepsExampleLossOff) {
  TransformReport rep{"align"};
  expect_turns(align_one(conv("alf_54", {user("Protocol."), asst("OK.", false), user("Here is an example."),
                                         asst("THOUGHT: a cloth first.\nACTION: go to countertop 1", false),
                                         user("Now, it's your turn."),
                                         asst("THOUGHT: the fridge.\nACTION: open fridge 1", true)}),
                         rep),
               {user("Protocol."), asst("OK.", false), user("Here is an example."),
                asst("a cloth first.", false, R), user("Which action?", false),
                asst("go to countertop 1", false, T), user("Now, it's your turn."),
                asst("the fridge.", true, R), user("Which action?", false), asst("open fridge 1", true, T)});
}

TEST(Align, WebShop) {
  TransformReport rep{"align"};
  expect_turns(align_one(conv("ws_205", {user("Find a bottle."), asst("Thought: search.\nAction: search[steel bottle]", true),
                                         user("[SEP] B07QX1"), asst("Thought: that one.\nAction: click[B07QX1]", true)}),
                         rep),
               {user("Find a bottle."), asst("search.", true, R), user("Which action?", false),
                asst("search", true, T), user("Arguments?", false), asst("steel bottle", true, U),
                user("[SEP] B07QX1"), asst("that one.", true, R), user("Which action?", false),
                asst("click", true, T), user("Arguments?", false), asst("B07QX1", true, U)});
}

TEST(Align, UnparseableTurnsAreKeptAndCounted) {
  const std::string odd1 = "Thought: I will only think.";
  const std::string odd2 = "Thought: a\nAction: search[x]\nObservation: invented";
  TransformReport rep{"align"};
  expect_turns(align_one(conv("mix", {user("q"), asst(odd1, true), user("more"),
                                      asst("Thought: go.\nAction: click[A]", true), user("o"), asst(odd2, true)}),
                         rep),
               {user("q"), asst(odd1, true), user("more"), asst("go.", true, R), user("Which action?", false),
                asst("click", true, T), user("Arguments?", false), asst("A", true, U), user("o"), asst(odd2, true)});
  EXPECT_EQ(rep.get("turns_unparseable"), 2);
  EXPECT_EQ(rep.get("turns_rewritten"), 1);
  EXPECT_EQ(rep.notes.size(), 2u);

  // Nothing parseable at all: the conversation is left as it was, tool turns included.
  TransformReport rep2{"align"};
  auto out = align_one(conv("bad", {user("q"), asst(odd1, true), tool("r")}), rep2);
  EXPECT_EQ(out[2].role, Role::Tool);
  EXPECT_EQ(rep2.get("turns_unparseable"), 1);
  EXPECT_EQ(rep2.get("conversations_without_react"), 1);
  EXPECT_EQ(rep2.get("conversations_rewritten"), 0);
}

std::vector<Conversation> synthetic_toolbench(size_t n) {
  std::vector<Conversation> v;
  for (size_t i = 0; i < n; ++i)
    v.push_back(conv("tb_" + std::to_string(i),
                     {sys(kToolBenchSystem), user("q" + std::to_string(i)),
                      asst("Thought: t\nAction: current_for_weatherly\nAction Input: {\"city\": \"X\"}"),
                      tool("{\"response\": \"r\"}"), asst("Final Answer: done")}, "toolbench"));
  return v;
}

TEST(Align, KeepsASeededShareInReActForm) {
  AlignConfig cfg;  // default phrasings, keep_react_fraction 0.1
  auto input = synthetic_toolbench(1000);
  input.push_back(conv("chat", {user("hi"), asst("Thought: x\nAction: y")}, "sharegpt"));
  cfg.sources = {"toolbench"};
  TransformReport rep{"align"};
  auto out = align_to_chat(input, cfg, rep);
  EXPECT_EQ(rep.get("conversations_kept_react"), 100);
  EXPECT_EQ(rep.get("conversations_rewritten"), 900);
  EXPECT_EQ(rep.get("conversations_skipped_source"), 1);
  EXPECT_EQ(out.back().turns[1].content, "Thought: x\nAction: y");  // other sources untouched
  std::set<std::string> kept, phrasings;
  for (const auto& c : out) {
    if (c.source != "toolbench") continue;
    if (c.turns.size() == 5) {
      kept.insert(c.id);
      EXPECT_EQ(c.turns[3].role, Role::Tool);
      EXPECT_EQ(c.turns[2].capability, F);
      EXPECT_EQ(c.turns[2].content, input[0].turns[2].content);
    } else {
      phrasings.insert(c.turns[3].content);
      EXPECT_NE(std::find(cfg.tool_elicits.begin(), cfg.tool_elicits.end(), c.turns[3].content),
                cfg.tool_elicits.end());
    }
  }
  EXPECT_EQ(kept.size(), 100u);
  EXPECT_EQ(phrasings.size(), cfg.tool_elicits.size());  // every phrasing gets drawn

  TransformReport again{"align"};
  auto out2 = align_to_chat(input, cfg, again);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i].turns.size(), out2[i].turns.size());
  for (size_t i = 0; i < out.size(); ++i)
    for (size_t t = 0; t < out[i].turns.size(); ++t) ASSERT_EQ(out[i].turns[t].content, out2[i].turns[t].content);

  cfg.seed = 7;
  TransformReport other{"align"};
  auto out3 = align_to_chat(input, cfg, other);
  std::set<std::string> kept3;
  for (const auto& c : out3)
    if (c.source == "toolbench" && c.turns.size() == 5) kept3.insert(c.id);
  EXPECT_EQ(kept3.size(), 100u);
  EXPECT_NE(kept3, kept);
}

}  // namespace
}  // namespace agenttune
