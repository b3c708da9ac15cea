// The Agent-FLAN transforms inside prepare_sft: datasets marked `transform` are pooled and
// transformed together, each goes back to its own folder, generated samples get theirs, and
// general chat stays as read.
#include <gtest/gtest.h>

#include <fstream>

#include "agenttune/util/error.h"
#include "sft_test_util.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using testing::Doc;
using testing::read_docs;
using testing::sample;

SftPrepareConfig agent_config(const fs::path& dir) {
  auto cfg = testing::base_config("agent-flan");
  auto tb = testing::dataset("toolbench", sample("toolbench_sft.json"), dir / "toolbench");
  auto af = testing::dataset("agentflan", sample("agentflan.jsonl"), dir / "agentflan");
  tb.transform = af.transform = true;
  cfg.datasets = {tb, af, testing::dataset("sharegpt", sample("sharegpt.json"), dir / "sharegpt")};
  cfg.transforms.format_following.samples = 3;
  cfg.transforms.negatives.pairs = {{"What is the capital of Peru?", "Lima."},
                                    {"Tell me a joke about cats.", "Cats do not tell jokes; they ignore them."}};
  cfg.format_following_output = dir / "format_following";
  cfg.negatives_output = dir / "negatives";
  return cfg;
}

std::vector<Doc> render_all(const std::vector<Conversation>& convs, const std::string& source) {
  auto tmpl = make_template("agent-flan");
  auto tok = testing::tokenizer_for(*tmpl);
  std::vector<Doc> out;
  for (const auto& c : convs) {
    if (c.source != source) continue;
    auto s = tmpl->render(c, tok);
    if (s.num_trained() > 0) out.push_back({s.ids, s.trained});
  }
  return out;
}

TEST(SftTransforms, PooledAgentDatasetsAreTransformedAndSplitBack) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto cfg = agent_config(dir);
  auto report = prepare_sft(cfg);

  std::vector<Conversation> pool, general;
  for (const auto& d : cfg.datasets) {
    ReadReport rr;
    auto convs = read_dataset({d.name, d.paths, d.format, d.policies}, rr);
    auto& into = d.transform ? pool : general;
    into.insert(into.end(), convs.begin(), convs.end());
  }
  TransformReports tr;
  pool = apply_transforms(std::move(pool), cfg.transforms, tr);
  EXPECT_GT(tr.align.get("turns_rewritten"), 0);

  ASSERT_EQ(report.datasets.size(), 5u);
  EXPECT_EQ(report.datasets[3].name, "format_following");
  EXPECT_EQ(report.datasets[4].name, "negatives");
  EXPECT_EQ(report.transforms.align.counts, tr.align.counts);
  for (const auto& r : report.datasets) {
    SCOPED_TRACE(r.name);
    auto expected = render_all(r.name == "sharegpt" ? general : pool, r.name);
    ASSERT_FALSE(expected.empty());
    EXPECT_EQ(read_docs(r.output), expected);
    EXPECT_EQ(r.kept, static_cast<int64_t>(expected.size()));
  }
  EXPECT_EQ(report.datasets[4].kept, 2);
  EXPECT_TRUE(ShardManifest::read(dir / "negatives" / "manifest.json").sources.empty());
}

TEST(SftTransforms, GeneratedSamplesNeedAnOutput) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto cfg = agent_config(dir);
  cfg.negatives_output.clear();
  try {
    prepare_sft(cfg);
    FAIL() << "negatives without an output folder were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("negatives_output"), std::string::npos) << e.what();
  }
  cfg.transforms.negatives.enabled = false;
  EXPECT_NO_THROW(prepare_sft(cfg));
}

TEST(SftTransforms, NegativePairsFromAFileJoinTheInlineOnes) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  auto cfg = agent_config(dir);
  cfg.transforms.negatives.pairs_file = dir / "pairs.jsonl";
  std::ofstream(cfg.transforms.negatives.pairs_file)
      << R"({"query": "Book me a flight to Oslo.", "answer": "I cannot book flights, but here is how to do it."})"
      << "\n\n"
      << R"({"query": "What is 2 + 2?", "answer": "4."})" << "\n"
      << R"({"query": "Is it raining in Lima?", "answer": "I have no live weather data."})" << "\n";
  auto report = prepare_sft(cfg);
  ASSERT_EQ(report.datasets.back().name, "negatives");
  EXPECT_EQ(report.datasets.back().kept, 5);  // 2 inline + 3 from the file

  std::ofstream(cfg.transforms.negatives.pairs_file) << R"({"query": "q", "answer": "a"})" << "\n"
                                                     << R"({"query": "q2", "reply": "a2"})" << "\n";
  try {
    prepare_sft(cfg);
    FAIL() << "a pair without an answer was accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("pairs.jsonl:2"), std::string::npos) << m;
    EXPECT_NE(m.find("\"answer\""), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace agenttune
