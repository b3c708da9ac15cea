// The AgentInstruct action scorers (OS, DB, KG, ALFWorld, WebShop, Mind2Web): a valid reply, an
// invalid one and near misses per task, each field of the score checked (docs/eval.md).
#include "test_action_util.h"

namespace agenttune {
namespace {

using eval::score_action;
using testing::Expect;
using testing::expect_score;
using testing::history;
using testing::kAsst;
using testing::kUser;

// --- OS ---------------------------------------------------------------------------------------
const Conversation kOs = testing::task_history(
    "You are an assistant operating a Linux (Ubuntu) shell. Think, then act: \"Act: bash\" with a "
    "```bash block, \"Act: answer(YOUR_ANSWER)\" or \"Act: finish\".",
    "How many regular files larger than 1 MB are there under /srv/uploads?");
const std::string kOsBash =
    "Think: find can filter by size.\n\nAct: bash\n\n```bash\nfind /srv/uploads -type f -size +1M | wc -l\n```";

TEST(ActionOs, BashMatchesAfterWhitespaceAndSemicolonNormalisation) {
  auto s = score_action(AgentTask::Os, kOs,
                        "Think: count them.\n\nAct: bash\n\n```bash\n  find  /srv/uploads -type f\t-size +1M | wc -l ;\n\n```",
                        kOsBash);
  expect_score(s, {.format_valid = true, .action_match = true, .calls_tool = true}, "normalised bash");
  EXPECT_EQ(s.reply_action, "bash: find /srv/uploads -type f -size +1M | wc -l");
  EXPECT_EQ(s.gold_action, s.reply_action);
  EXPECT_TRUE(s.gold_calls_tool);
}

TEST(ActionOs, NearMissesAndInvalidReplies) {
  expect_score(score_action(AgentTask::Os, kOs, "Act: bash\n\n```bash\nfind /srv/uploads -type f | wc -l\n```", kOsBash),
               {.format_valid = true, .calls_tool = true}, "other command");
  // Quoted text is kept verbatim.
  expect_score(score_action(AgentTask::Os, kOs, "Act: bash\n```bash\necho 'a  b'\n```", "Act: bash\n```bash\necho 'a b'\n```"),
               {.format_valid = true, .calls_tool = true}, "quoted spaces");
  auto no_block = score_action(AgentTask::Os, kOs, "Think: x\nAct: bash\nfind /srv/uploads", kOsBash);
  expect_score(no_block, {.calls_tool = true}, "bash without a block");
  EXPECT_NE(no_block.why.find("```bash"), std::string::npos) << no_block.why;
  expect_score(score_action(AgentTask::Os, kOs, "I think I should run find.", kOsBash), {.refuses = true}, "no Act");
  // Answering where the gold runs a command is a wrong refusal.
  auto early = score_action(AgentTask::Os, kOs, "Think: guess.\n\nAct: answer(7)", kOsBash);
  expect_score(early, {.format_valid = true, .refuses = true}, "early answer");
  EXPECT_TRUE(eval::wrongly_refuses(early, /*negative=*/false));
}

TEST(ActionOs, AnswerComparesNumbersByValueAndTheLastActWins) {
  const std::string gold = "Think: it printed 7.\n\nAct: answer(7)";
  auto s = score_action(AgentTask::Os, kOs, "Think: seven.\nAct: answer( 7.0 )", gold);
  expect_score(s, {.format_valid = true, .action_match = true, .refuses = true}, "7.0 = 7");
  EXPECT_EQ(s.gold_action, "answer: 7");
  expect_score(score_action(AgentTask::Os, kOs, "Act: answer(8)", gold), {.format_valid = true, .refuses = true}, "8");
  expect_score(score_action(AgentTask::Os, kOs, "Act: answer 7", gold), {.refuses = true}, "no brackets");
  expect_score(score_action(AgentTask::Os, kOs, "Act: finish\nAct: answer(7)", gold),
               {.format_valid = true, .action_match = true, .refuses = true}, "last act");
  expect_score(score_action(AgentTask::Os, kOs, "Act: Finish", "Think: done.\n\nAct: finish"),
               {.format_valid = true, .action_match = true, .refuses = true}, "finish, any case");
  expect_score(score_action(AgentTask::Os, kOs, "Act:\n\nfinish", "Act: finish"),
               {.format_valid = true, .action_match = true, .refuses = true}, "Act:\\s* crosses lines");
}

// --- DB ---------------------------------------------------------------------------------------
const Conversation kDb = testing::task_history(
    "You answer questions by querying a MySQL database. To run SQL reply \"Action: Operation\" followed "
    "by one ```sql block. When you are sure, reply \"Action: Answer\" and \"Final Answer: [...]\".",
    "Which two cities have the most customers in the table `customers`?");
const std::string kDbSql =
    "Group by city and sort.\nAction: Operation\n```sql\nSELECT city, COUNT(*) AS n FROM customers GROUP BY city "
    "ORDER BY n DESC LIMIT 2;\n```";

TEST(ActionDb, SqlMatchesAfterKeywordCaseWhitespaceAndBackticks) {
  auto s = score_action(AgentTask::Db, kDb,
                        "Action: Operation\n```sql\nselect city,count( * ) as n from `customers`\n group by city "
                        "order by n desc limit 2\n```",
                        kDbSql);
  expect_score(s, {.format_valid = true, .action_match = true, .calls_tool = true}, "normalised sql");
  EXPECT_EQ(s.gold_action, "Operation: SELECT city, COUNT(*) AS n FROM customers GROUP BY city ORDER BY n DESC LIMIT 2");
}

TEST(ActionDb, NearMissesAndInvalidReplies) {
  const std::string where = "Action: Operation\n```sql\nSELECT id FROM customers WHERE city = 'Lisbon'\n```";
  expect_score(score_action(AgentTask::Db, kDb, "Action: Operation\n```sql\nSELECT id FROM customers WHERE city = 'lisbon'\n```", where),
               {.format_valid = true, .calls_tool = true}, "string literal case");
  expect_score(score_action(AgentTask::Db, kDb, "Action: Operation\n```sql\nSELECT city FROM customers LIMIT 2\n```", kDbSql),
               {.format_valid = true, .calls_tool = true}, "other query");
  expect_score(score_action(AgentTask::Db, kDb, "Action: Operation\nSELECT 1", kDbSql), {.calls_tool = true}, "no sql block");
  expect_score(score_action(AgentTask::Db, kDb, "Action: Operation", kDbSql), {.refuses = true}, "no newline after the action");
  auto lower = score_action(AgentTask::Db, kDb, "Action: operation\n```sql\nSELECT 1\n```", kDbSql);
  expect_score(lower, {.refuses = true}, "case-sensitive action");
  EXPECT_NE(lower.why.find("unknown action 'operation'"), std::string::npos) << lower.why;
}

TEST(ActionDb, AnswerComparesAsSetOrNumber) {
  const std::string gold = "They are Lisbon and Porto.\nAction: Answer\nFinal Answer: [\"Lisbon\", \"Porto\"]";
  expect_score(score_action(AgentTask::Db, kDb, "x\nAction: Answer\nFinal Answer: ['Porto', 'Lisbon']", gold),
               {.format_valid = true, .action_match = true, .refuses = true}, "python list, other order");
  expect_score(score_action(AgentTask::Db, kDb, "x\nAction: Answer\nFinal Answer: [\"Lisbon\"]", gold),
               {.format_valid = true, .refuses = true}, "one of two");
  expect_score(score_action(AgentTask::Db, kDb, "x\nAction: Answer\nFinal Answer: [\"41.0\"]", "y\nAction: Answer\nFinal Answer: [41]"),
               {.format_valid = true, .action_match = true, .refuses = true}, "numbers by value");
  expect_score(score_action(AgentTask::Db, kDb, "x\nAction: Answer\nLisbon and Porto", gold), {.refuses = true}, "no Final Answer");
}

// --- KG ---------------------------------------------------------------------------------------
const Conversation kKg = history(
    {{kUser,
      "You are an agent that answers questions based on the knowledge stored in a knowledge base.\n"
      "1. get_relations(variable: var) -> list of relations\n"
      "2. get_neighbors(variable: var, relation: str) -> variable\n"
      "3. intersection(variable1: var, variable2: var) -> variable\n"
      "4. count(variable: var) -> int\n"
      "Give one \"Action: fn(args)\" per turn; end with \"Final Answer: #id\"."},
     {kAsst, "I've understood your instruction, start please."},
     {kUser, "Question: who is the spouse of Barack Obama?\nEntities: [Barack Obama]"}});

TEST(ActionKg, CallMatchesWithEntityCaseAndVariablePrefix) {
  auto s = score_action(AgentTask::Kg, kKg, "Thought: look at his relations.\nAction: get_relations(barack  obama)",
                        "Thought: first the relations.\nAction: get_relations(Barack Obama)");
  // Entity names fold case but keep their inner spaces as written.
  expect_score(s, {.format_valid = true, .tool_valid = true, .args_valid = true, .calls_tool = true}, "double space");
  expect_score(score_action(AgentTask::Kg, kKg, "Action: get_relations(BARACK OBAMA)", "Action: get_relations(Barack Obama)"),
               {.format_valid = true, .tool_valid = true, .args_valid = true, .action_match = true, .calls_tool = true},
               "case-folded entity");
  const std::string gold = "Thought: follow the spouse relation.\nAction: get_neighbors(#0, people.person.spouse_s)";
  auto v = score_action(AgentTask::Kg, kKg, "Action: get_neighbors(variable #0, people.person.spouse\\_s)", gold);
  expect_score(v, {.format_valid = true, .tool_valid = true, .args_valid = true, .action_match = true, .calls_tool = true},
               "variable prefix and escaped underscore");
  EXPECT_EQ(v.reply_action, "get_neighbors(#0, people.person.spouse_s)");
  expect_score(score_action(AgentTask::Kg, kKg, "Action: get_neighbors(#0, People.Person.spouse_s)", gold),
               {.format_valid = true, .tool_valid = true, .args_valid = true, .calls_tool = true}, "relation case");
}

TEST(ActionKg, UnknownFunctionWrongArityAndInvalid) {
  const std::string gold = "Action: get_neighbors(#0, people.person.spouse_s)";
  auto arity = score_action(AgentTask::Kg, kKg, "Action: get_neighbors(#0)", gold);
  expect_score(arity, {.format_valid = true, .tool_valid = true, .args_valid = false, .calls_tool = true}, "arity");
  EXPECT_NE(arity.why.find("takes 2 argument(s), got 1"), std::string::npos) << arity.why;
  // argmax is AgentBench's, but this prompt does not offer it.
  expect_score(score_action(AgentTask::Kg, kKg, "Action: argmax(#0, people.person.height_meters)", gold),
               {.format_valid = true, .tool_valid = false, .calls_tool = true}, "not offered");
  expect_score(score_action(AgentTask::Kg, kKg, "I would look up the relations.", gold), {.refuses = true}, "no action");
  expect_score(score_action(AgentTask::Kg, kKg, "Final Answer: #3", "Thought: #3 is it.\nFinal Answer: #3"),
               {.format_valid = true, .action_match = true, .refuses = true}, "final answer");
  expect_score(score_action(AgentTask::Kg, kKg, "Final Answer: #4", "Final Answer: #3"),
               {.format_valid = true, .refuses = true}, "other variable");
}

// --- ALFWorld ---------------------------------------------------------------------------------
const Conversation kAlf = testing::task_history(
    "Interact with a household to solve a task. Each turn, reply with \"THOUGHT: ...\" and then \"ACTION: ...\".",
    "You see a cabinet 1, a drawer 1, a fridge 1.\nYour task is to: put a cool apple in the drawer.");

TEST(ActionAlfworld, CommandNormalisedAndPutSpellingsAgree) {
  expect_score(score_action(AgentTask::Alfworld, kAlf, "THOUGHT: the fridge.\nACTION: Go to  fridge 1.",
                            "THOUGHT: apples are cold.\nACTION: go to fridge 1"),
               {.format_valid = true, .tool_valid = true, .action_match = true, .calls_tool = true}, "case, space, dot");
  const std::string gold = "ACTION: put apple 1 in/on drawer 1";
  for (const char* reply : {"ACTION: put apple 1 in drawer 1", "ACTION: put apple 1 on drawer 1", "ACTION: move apple 1 to drawer 1"})
    expect_score(score_action(AgentTask::Alfworld, kAlf, reply, gold),
                 {.format_valid = true, .tool_valid = true, .action_match = true, .calls_tool = true}, reply);
}

TEST(ActionAlfworld, NearMissesAndInvalidReplies) {
  const std::string gold = "ACTION: go to fridge 1";
  expect_score(score_action(AgentTask::Alfworld, kAlf, "ACTION: go to fridge 2", gold),
               {.format_valid = true, .tool_valid = true, .calls_tool = true}, "other object id");
  expect_score(score_action(AgentTask::Alfworld, kAlf, "ACTION: fly to the fridge", gold),
               {.format_valid = true, .tool_valid = false, .calls_tool = true}, "no such command");
  expect_score(score_action(AgentTask::Alfworld, kAlf, "THOUGHT: go to the fridge", gold), {.refuses = true}, "no ACTION");
  expect_score(score_action(AgentTask::Alfworld, kAlf, "Action: go to fridge 1", gold), {.refuses = true}, "lower-case marker");
}

// --- WebShop ----------------------------------------------------------------------------------
const Conversation kShop = testing::task_history(
    "You are shopping on a web store. Reply with \"Thought: ...\" and \"Action: ...\": search[keywords] or click[button text].",
    "Instruction: [SEP] a steel bottle [SEP] Back to Search [SEP] Next > [SEP] B07QX1 [SEP] Insulated Steel Bottle "
    "750ml [SEP] $19.99");

TEST(ActionWebshop, ClickSearchClickablesAndInvalidReplies) {
  testing::expect_cases(
      AgentTask::Webshop, kShop, "Thought: the first fits.\nAction: click[B07QX1]",
      {{"Thought: ok.\nAction:\nclick[b07qx1]", {.format_valid = true, .tool_valid = true, .action_match = true, .calls_tool = true},
        "newline, case"},
       {"Action: click[B09ZT7]", {.format_valid = true, .tool_valid = false, .calls_tool = true}, "not on the page"},
       {"Action: click[Next >]", {.format_valid = true, .tool_valid = true, .calls_tool = true}, "other button"},
       {"Action: buy[B07QX1]", {.refuses = true}, "unknown verb"},
       {"Action: click[]", {.refuses = true}, "empty value"},
       {"click[B07QX1]", {.refuses = true}, "no Action:"}});
  testing::expect_cases(AgentTask::Webshop, kShop, "Action: search[steel bottle 750ml]",
                        {{"Action: search[Steel  Bottle 750ml]", {.format_valid = true, .action_match = true, .calls_tool = true}, "search"},
                         {"Action: search[steel bottle]", {.format_valid = true, .calls_tool = true}, "other keywords"}});
}

// --- Mind2Web ---------------------------------------------------------------------------------
const Conversation kWeb = history(
    {{kUser, "'''\n<html><button id=1>Search</button><select id=2>Pickup</select></html>\n'''\n\nTask: book a table for "
             "pickup\nPrevious actions:\nNone\nWhat should be the next action? Please select from the following "
             "choices:\n\nA. None of the above\nB. <button id=1> Search </button>\nC. <select id=2> Pickup\nD. <a id=3> Help"}});

TEST(ActionMind2web, LetterOperationAndValue) {
  const Expect match{.format_valid = true, .tool_valid = true, .action_match = true, .calls_tool = true};
  const Expect differs{.format_valid = true, .tool_valid = true, .calls_tool = true};
  testing::expect_cases(AgentTask::Mind2web, kWeb, "Thought: choose pickup.\nAnswer: C.\nAction: SELECT\nValue: Pickup",
                        {{"Thought: the select.\nAnswer: C.\nAction: SELECT\nValue:  Pickup ", match, "same"},
                         // Mind2Web's own target form: the choice line first, no "Answer:".
                         {"C.\nAction: SELECT\nValue: Pickup", match, "bare choice line"},
                         {"Answer: C.\nAction: SELECT\nValue: Delivery", differs, "other value"},
                         {"Answer: B.\nAction: CLICK", differs, "other element"},
                         {"Answer: F.\nAction: CLICK", {.format_valid = true, .tool_valid = false, .calls_tool = true}, "not a choice"},
                         {"Answer: C.\nAction: SELECT", {.tool_valid = true, .calls_tool = true}, "no value"},
                         {"I would pick the select box.", {.refuses = true}, "no answer"},
                         {"G.\nAction: CLICK", {.refuses = true}, "choice beyond F"}});
  testing::expect_cases(AgentTask::Mind2web, kWeb, "Thought: nothing fits.\nAnswer: A.",
                        {{"Answer: A.", {.format_valid = true, .tool_valid = true, .action_match = true, .refuses = true},
                          "none of the above"}});
}

}  // namespace
}  // namespace agenttune
