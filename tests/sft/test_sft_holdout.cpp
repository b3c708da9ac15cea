// SFT prepare's hold-out: records set aside per dataset and per task, written as heldout.jsonl next
// to the shards and never trained on.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <limits>
#include <set>

#include "agenttune/config/load.h"
#include "agenttune/data/heldout.h"
#include "agenttune/util/files.h"
#include "error_of.h"
#include "sft_test_util.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

// AgentInstruct records: `counts` per task prefix, ids <task>_<i>.
fs::path agentinstruct_file(const fs::path& dir, const std::map<std::string, int>& counts,
                            const std::string& bad_id = "") {
  std::string text;
  auto record = [&](const std::string& id, const std::string& task) {
    nlohmann::json turns = nlohmann::json::array(
        {{{"from", "human"}, {"loss", nullptr}, {"value", "You act in the " + task + " task."}},
         {{"from", "gpt"}, {"loss", false}, {"value", "Ok."}},
         {{"from", "human"}, {"loss", nullptr}, {"value", "Problem " + id}},
         {{"from", "gpt"}, {"loss", true}, {"value", "Think: solve " + id + "\n\nAct: answer(" + id + ")"}}});
    text += nlohmann::json{{"id", id}, {"conversations", turns}}.dump() + "\n";
  };
  for (const auto& [task, n] : counts)
    for (int i = 0; i < n; ++i) record(task + "_" + std::to_string(i), task);
  if (!bad_id.empty()) record(bad_id, "unknown");
  return testing::write_text(dir / "agentinstruct.jsonl", text);
}

struct Run {
  SftDatasetReport report;
  std::set<std::string> trained_ids;  // ids of the samples written to the shards
};

Run prepare(const fs::path& file, const fs::path& out, double holdout, uint64_t seed = 0, int64_t max_samples = 0) {
  auto cfg = testing::base_config("agentlm");
  cfg.seed = seed;
  auto d = testing::dataset("agent", file, out);
  d.holdout = holdout;
  d.max_samples = max_samples;
  cfg.datasets.push_back(d);
  Run run;
  SftPrepareHooks hooks;
  hooks.on_kept = [&](const std::string&, const Conversation& c, const RenderedSample&) { run.trained_ids.insert(c.id); };
  run.report = prepare_sft(cfg, hooks).datasets.at(0);
  return run;
}

std::set<std::string> ids_of(const std::vector<HeldOutRecord>& records) {
  std::set<std::string> ids;
  for (const auto& r : records) ids.insert(r.conv.id);
  return ids;
}

TEST(SftHoldout, CountPerTaskIsHeldOutAndNeverTrained) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto file = agentinstruct_file(dir, {{"os", 6}, {"db", 4}, {"kg", 3}});
  auto run = prepare(file, dir / "out", 2);
  EXPECT_EQ(run.report.heldout, (std::map<std::string, int64_t>{{"db", 2}, {"kg", 2}, {"os", 2}}));
  EXPECT_EQ(run.report.kept, 13 - 6);
  EXPECT_NE(run.report.summary_line().find("13 records in = 7 kept + 6 held out {db=2, kg=2, os=2}"),
            std::string::npos)
      << run.report.summary_line();
  auto held = read_heldout(dir / "out");
  ASSERT_EQ(held.size(), 6u);
  std::map<AgentTask, int> per_task;
  for (const auto& r : held) {
    ++per_task[r.task];
    EXPECT_EQ(r.conv.id.substr(0, r.conv.id.find('_')), task_name(r.task));
    EXPECT_EQ(r.conv.source, "agent");
    EXPECT_FALSE(r.negative);
    EXPECT_EQ(r.conv.file, file.string());
    ASSERT_EQ(r.conv.turns.size(), 4u);
    EXPECT_EQ(r.conv.turns[3].content, "Think: solve " + r.conv.id + "\n\nAct: answer(" + r.conv.id + ")");
    EXPECT_EQ(r.conv.turns[1].loss, std::optional<bool>(false));
  }
  EXPECT_EQ(per_task, (std::map<AgentTask, int>{{AgentTask::Os, 2}, {AgentTask::Db, 2}, {AgentTask::Kg, 2}}));
  EXPECT_EQ(run.trained_ids.size(), 7u);
  for (const auto& id : ids_of(held)) EXPECT_FALSE(run.trained_ids.contains(id)) << id << " was trained";
  EXPECT_EQ(testing::read_docs(dir / "out").size(), 7u);
}

TEST(SftHoldout, FractionRoundsPerTaskAndTheSeedPicks) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto file = agentinstruct_file(dir, {{"os", 6}, {"db", 4}, {"alfworld", 3}, {"webshop", 1}});
  auto a = prepare(file, dir / "a", 0.5, 7);
  EXPECT_EQ(a.report.heldout,
            (std::map<std::string, int64_t>{{"alfworld", 2}, {"db", 2}, {"os", 3}, {"webshop", 1}}));
  prepare(file, dir / "b", 0.5, 7);
  prepare(file, dir / "c", 0.5, 8);
  EXPECT_EQ(ids_of(read_heldout(dir / "a")), ids_of(read_heldout(dir / "b")));
  EXPECT_NE(ids_of(read_heldout(dir / "a")), ids_of(read_heldout(dir / "c")));
  // max_samples applies to what is left for training.
  auto m = prepare(file, dir / "m", 1, 7, 3);
  EXPECT_EQ(m.report.kept, 3);
  EXPECT_EQ(m.report.dropped.at("max_samples"), 14 - 4 - 3);
  // A count past every task's size (and past size_t's range) holds out each task whole, which
  // leaves nothing to train: the error says where the records went.
  const auto all = testing::error_of([&] { prepare(file, dir / "all", 1e30, 7); });
  EXPECT_NE(all.find("none of its 14 samples is left to write (14 held out for eval {alfworld=3, db=4, os=6, "
                     "webshop=1} (holdout), dropped: )"),
            std::string::npos)
      << all;
  // Hold-out 0 removes the file an earlier run wrote.
  prepare(file, dir / "a", 0, 7);
  EXPECT_FALSE(fs::exists(dir / "a" / kHeldOutFile));
}

TEST(SftHoldout, AgentFlanNegativesAreFlaggedAndSplitApart) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto run = prepare(testing::sample("agentflan.jsonl"), dir / "out", 1);
  EXPECT_EQ(run.report.heldout, (std::map<std::string, int64_t>{{"agentflan", 1}, {"agentflan negative", 1}}));
  auto held = read_heldout(dir / "out");
  ASSERT_EQ(held.size(), 2u);
  int negatives = 0;
  for (const auto& r : held) {
    EXPECT_EQ(r.task, AgentTask::AgentFlan);
    EXPECT_EQ(r.negative, r.conv.id == "toolbench_negative_17");
    negatives += r.negative;
  }
  EXPECT_EQ(negatives, 1);
  EXPECT_FALSE(run.trained_ids.contains("toolbench_negative_17"));
}

TEST(SftHoldout, TransformedDatasetsAndGeneratedNegativesHoldOutBeforeTraining) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto cfg = testing::base_config("agent-flan");
  auto af = testing::dataset("agentflan", testing::sample("agentflan.jsonl"), dir / "agentflan");
  af.transform = true;
  af.holdout = 1;
  cfg.datasets = {af};
  cfg.transforms.format_following.enabled = false;
  cfg.transforms.negatives.pairs = {{"What is the capital of Peru?", "Lima."},
                                    {"Tell me a joke about cats.", "Cats do not tell jokes; they ignore them."},
                                    {"How many legs has a spider?", "Eight."}};
  cfg.negatives_output = dir / "negatives";
  cfg.negatives_holdout = 1;
  std::map<std::string, std::set<std::string>> trained;
  SftPrepareHooks hooks;
  hooks.on_kept = [&](const std::string& ds, const Conversation& c, const RenderedSample&) { trained[ds].insert(c.id); };
  const auto report = prepare_sft(cfg, hooks);
  ASSERT_EQ(report.datasets.size(), 2u);
  EXPECT_EQ(report.datasets[0].heldout, (std::map<std::string, int64_t>{{"agentflan", 1}, {"agentflan negative", 1}}));
  for (const auto& id : ids_of(read_heldout(dir / "agentflan"))) EXPECT_FALSE(trained["agentflan"].contains(id)) << id;
  const auto& neg = report.datasets[1];
  EXPECT_EQ(neg.name, "negatives");
  EXPECT_EQ(neg.heldout, (std::map<std::string, int64_t>{{"agentflan negative", 1}}));
  EXPECT_EQ(neg.kept, 2);
  const auto held = read_heldout(dir / "negatives");
  ASSERT_EQ(held.size(), 1u);
  EXPECT_TRUE(held[0].negative);
  EXPECT_EQ(held[0].task, AgentTask::AgentFlan);
  EXPECT_EQ(held[0].conv.source, "negatives");
  EXPECT_EQ(testing::read_docs(dir / "negatives").size(), 2u);
}

TEST(SftHoldout, BadSettingsAndUnknownTaskIdsAreErrors) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  for (double bad : {1.5, -0.25, std::numeric_limits<double>::infinity()}) {
    auto cfg = testing::base_config("agentlm");
    auto d = testing::dataset("agent", dir / "x.jsonl", dir / "out");
    d.holdout = bad;
    cfg.datasets.push_back(d);
    EXPECT_NE(testing::error_of([&] { cfg.validate("cfg"); }).find("datasets[0] (agent).holdout must be 0 (none)"),
              std::string::npos)
        << bad;
  }
  auto cfg = testing::base_config("agentlm");
  cfg.datasets.push_back(testing::dataset("agent", dir / "x.jsonl", dir / "out"));
  cfg.negatives_holdout = 2;
  cfg.transforms.negatives.enabled = false;
  EXPECT_NE(testing::error_of([&] { cfg.validate("cfg"); }).find("negatives_holdout is set but transforms.negatives"),
            std::string::npos);
  auto file = agentinstruct_file(dir, {{"os", 2}}, "search_5");
  const auto err = testing::error_of([&] { prepare(file, dir / "out", 1); });
  EXPECT_NE(err.find("record 2 (id 'search_5')"), std::string::npos) << err;
  EXPECT_NO_THROW(prepare(file, dir / "out", 0));  // without a hold-out the id does not matter
}

TEST(SftHoldout, YamlKeysBind) {
  const auto c = load_config_text<SftPrepareConfig>(
      "tokenizer: t.model\nnegatives_holdout: 3\ndatasets: [{name: x, paths: [x.json], output: out, holdout: 0.1}]\n",
      ConfigSource{"/cfg/sft.yaml", "/cfg", {}}, {"datasets.0.holdout=5"});
  EXPECT_DOUBLE_EQ(c.datasets.at(0).holdout, 5);
  EXPECT_DOUBLE_EQ(c.negatives_holdout, 3);
}

TEST(SftHoldout, InspectWritesNoHeldOutFile) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto cfg = testing::base_config("agentlm");
  auto d = testing::dataset("agent", agentinstruct_file(dir, {{"os", 3}}), dir / "out");
  d.holdout = 1;
  cfg.datasets.push_back(d);
  SftPrepareHooks hooks;
  hooks.write = false;
  EXPECT_EQ(prepare_sft(cfg, hooks).datasets.at(0).heldout.at("os"), 1);
  EXPECT_FALSE(fs::exists(dir / "out"));
}

// Structured tools and calls survive the file exactly as the reader's text (key order, spacing),
// since a template renders that text; a file without them reads as before.
TEST(SftHoldout, HeldOutFileKeepsToolsAndNativeCallsAsTheirText) {
  const auto dir = testing::scratch_dir();
  HeldOutRecord r;
  r.task = AgentTask::ToolBench;
  r.conv.id = "weather_1";
  r.conv.source = "tools";
  r.conv.file = "in.jsonl";
  r.conv.record = 3;
  const std::string spec = R"({"type": "function", "function": {"name": "get_weather", "parameters": )"
                           R"({"type": "object", "properties": {"unit": {"type": "string"}, "city": {}}}}})";
  r.conv.tools = {{"get_weather", spec}};
  Turn call{Role::Assistant, "Let me look.", true, "retrieval"};
  call.tool_calls = {{"get_weather", R"({"unit": "c",  "city": "Paris"})", "call_7"}, {"get_weather", "{}", ""}};
  Turn result{Role::Tool, "18", std::nullopt, ""};
  result.name = "get_weather";
  r.conv.turns = {{Role::User, "Weather in Paris?", std::nullopt, ""}, call, result,
                  {Role::Assistant, "It is 18 C.", std::nullopt, ""}};
  write_heldout(dir / kHeldOutFile, {r});
  const auto back = read_heldout(dir);
  ASSERT_EQ(back.size(), 1u);
  const auto& c = back[0].conv;
  ASSERT_EQ(c.tools.size(), 1u);
  EXPECT_EQ(c.tools[0].name, "get_weather");
  EXPECT_EQ(c.tools[0].json, spec);
  ASSERT_EQ(c.turns.size(), 4u);
  ASSERT_EQ(c.turns[1].tool_calls.size(), 2u);
  EXPECT_EQ(c.turns[1].tool_calls[0].name, "get_weather");
  EXPECT_EQ(c.turns[1].tool_calls[0].arguments, R"({"unit": "c",  "city": "Paris"})");
  EXPECT_EQ(c.turns[1].tool_calls[0].id, "call_7");
  EXPECT_EQ(c.turns[1].tool_calls[1].arguments, "{}");
  EXPECT_EQ(c.turns[1].tool_calls[1].id, "");
  EXPECT_EQ(c.turns[1].content, "Let me look.");
  EXPECT_EQ(c.turns[1].capability, "retrieval");
  EXPECT_EQ(c.turns[2].name, "get_weather");
  EXPECT_TRUE(c.turns[3].tool_calls.empty());
  EXPECT_EQ(c.turns[3].name, "");
  EXPECT_EQ(back[0].task, AgentTask::ToolBench);

  // Unset: no keys written; a wrong type is an error naming the line and the field.
  HeldOutRecord plain = r;
  plain.conv.tools.clear();
  plain.conv.turns = {r.conv.turns[0], r.conv.turns[3]};
  write_heldout(dir / kHeldOutFile, {plain});
  const auto text = read_text_file(dir / kHeldOutFile);
  auto bad = nlohmann::json::parse(text);
  EXPECT_FALSE(bad.contains("tools")) << text;
  for (const auto& t : bad["turns"]) EXPECT_FALSE(t.contains("tool_calls") || t.contains("name")) << text;
  EXPECT_TRUE(read_heldout(dir).at(0).conv.tools.empty());
  bad["turns"][1]["tool_calls"] = {{{"name", "get_weather"}, {"arguments", {{"city", "Paris"}}}}};
  testing::write_text(dir / kHeldOutFile, text + bad.dump() + "\n");
  const auto err = testing::error_of([&] { read_heldout(dir); });
  EXPECT_NE(err.find("line 2: field 'arguments' must be a string"), std::string::npos) << err;
}

}  // namespace
}  // namespace agenttune
