// prepare's summary accounts for every record (issue 22, item 6): records in = kept + drops by
// reason, the reader's drops included (before: "32 samples in, 32 kept, dropped {}" for a
// 33-record file), and the transforms' shortfalls are listed and, beyond kShortfallWarnShare,
// logged as warnings (before: format_following made 2 of 20 samples without a word).
#include <gtest/gtest.h>

#include <numeric>

#include "agenttune/transforms/transforms.h"
#include "sft_test_util.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using Counts = std::map<std::string, int64_t>;

std::string sg(const std::string& turns) { return R"({"conversations":[)" + turns + "]}\n"; }
std::string t(const std::string& from, const std::string& value) {
  return R"({"from":")" + from + R"(","value":")" + value + R"("})";
}
std::string qa(int i) { return sg(t("human", "question " + std::to_string(i)) + "," + t("gpt", "answer")); }

int64_t sum(const Counts& c) {
  return std::accumulate(c.begin(), c.end(), int64_t{0}, [](int64_t s, const auto& kv) { return s + kv.second; });
}

SftPrepareReport prepare_one_file(const fs::path& dir, const std::string& text, const ReadPolicies& policies,
                                  int64_t max_samples = 0) {
  SftPrepareConfig cfg = testing::base_config("llama-2-chat");
  auto d = testing::dataset("chat", testing::write_text(dir / "chat.jsonl", text), dir / "out", DatasetFormat::ShareGPT);
  d.policies = policies;
  d.max_samples = max_samples;
  cfg.datasets.push_back(d);
  return prepare_sft(cfg);
}

TEST(SftPrepareReport, AnUnreadableLineIsCountedInRecordsIn) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  std::string text;
  for (int i = 0; i < 32; ++i) text += qa(i);
  text += "{\"conversations\": [\n";  // a cut line: malformed JSON
  ReadPolicies drop;
  drop.bad_record = OnProblem::Drop;
  const auto report = prepare_one_file(dir, text, drop);
  const auto& r = report.datasets.at(0);
  EXPECT_EQ(r.samples_in, 32);  // what the summary used to call "samples in"
  EXPECT_EQ(r.records_in(), 33);
  EXPECT_EQ(r.kept, 32);
  EXPECT_EQ(r.all_dropped(), (Counts{{"malformed_json", 1}}));
  EXPECT_NE(r.summary_line().find("chat -> " + (dir / "out").string() +
                                  ": 33 records in = 32 kept + 1 dropped {malformed_json=1}; "),
            std::string::npos)
      << r.summary_line();
  EXPECT_NE(report.summary().find("33 records in = 32 kept"), std::string::npos);
}

TEST(SftPrepareReport, DropsByEveryReasonAddUpToTheRecordsIn) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  std::string text;
  for (int i = 0; i < 10; ++i) text += qa(i);
  text += "not json\n";                                                                   // malformed_json
  text += sg(t("human", "q") + "," + t("gpt", "a") + "," + t("gpt", "b"));                // non_alternating
  text += sg(t("human", "q") + "," + t("gpt", "  "));                                     // empty_content
  text += sg(t("human", "q") + "," + t("gpt", "a") + "," + t("bot", "c"));                // kept, a turn dropped
  text += sg(t("human", "q") + "," + t("bot", "c"));                                      // no_assistant_turn
  ReadPolicies lenient;
  lenient.bad_record = OnProblem::Drop;
  lenient.alternation = Alternation::Drop;
  lenient.roles.unknown = OnProblem::Drop;
  const auto report = prepare_one_file(dir, text, lenient, /*max_samples=*/8);
  const auto& r = report.datasets.at(0);
  const Counts expected{{"empty_content", 1}, {"malformed_json", 1}, {"max_samples", 3},
                        {"no_assistant_turn", 1}, {"non_alternating", 1}};
  EXPECT_EQ(r.all_dropped(), expected);
  EXPECT_EQ(r.records_in(), 15);
  EXPECT_EQ(r.kept, 8);
  EXPECT_EQ(r.records_in(), r.kept + sum(r.all_dropped()));
  EXPECT_NE(r.summary_line().find(": 15 records in = 8 kept + 7 dropped {empty_content=1, malformed_json=1, "
                                  "max_samples=3, no_assistant_turn=1, non_alternating=1}, turns dropped "
                                  "{unknown role 'bot'=1}"),
            std::string::npos)
      << r.summary_line();
}

TEST(SftPrepareReport, FormatFollowingShortfallIsSummarisedAndWarned) {
  REQUIRE_TOKENIZER();
  auto dir = testing::scratch_dir();
  SftPrepareConfig cfg = testing::base_config("llama-2-chat");
  auto d = testing::dataset("toolbench", testing::sample("toolbench_sft.json"), dir / "toolbench", DatasetFormat::ToolBench);
  d.transform = true;
  cfg.datasets.push_back(d);
  cfg.transforms.format_following.samples = 20;
  cfg.transforms.negatives.enabled = false;
  cfg.format_following_output = dir / "ff";
  ::testing::internal::CaptureStderr();
  const auto report = prepare_sft(cfg);
  const std::string log = ::testing::internal::GetCapturedStderr();
  // Four Step records of two tasks: the three Reykjavik steps open with the same call.
  const auto& ff = report.transforms.format_following;
  EXPECT_EQ(ff.get("candidates"), 2);
  EXPECT_EQ(ff.get("duplicates"), 2);
  ASSERT_EQ(ff.shortfalls.size(), 1u);
  EXPECT_EQ(ff.shortfalls[0].asked, 20);
  EXPECT_EQ(ff.shortfalls[0].made, 2);
  const std::string line =
      "format_following made 2 of the 20 samples asked for (90% short): the 4 conversations scanned hold 2 "
      "distinct first tool calls (no_call=0, duplicates=2, tool_list_failures=0)";
  EXPECT_NE(report.summary().find("shortfall: " + line), std::string::npos) << report.summary();
  EXPECT_NE(log.find(line), std::string::npos) << log;
  ASSERT_EQ(report.datasets.size(), 2u);
  EXPECT_NE(report.datasets[1].summary_line().find("format_following -> " + (dir / "ff").string() +
                                                   ": 2 generated = 2 kept + 0 dropped {}"),
            std::string::npos)
      << report.datasets[1].summary_line();
}

TEST(SftPrepareReport, ShortfallsWarnOnlyBeyondTheStatedShare) {
  TransformReport r("format_following");
  r.short_of("samples", 20, 20, "none");
  EXPECT_TRUE(r.shortfalls.empty());
  r.short_of("samples", 20, 18, "a tenth short");  // exactly kShortfallWarnShare: summarised only
  EXPECT_TRUE(r.shortfall_warnings().empty());
  EXPECT_NE(r.summary().find("shortfall: format_following made 18 of the 20 samples asked for (10% short)"),
            std::string::npos);
  r.short_of("samples", 20, 17, "more than a tenth short");
  ASSERT_EQ(r.shortfall_warnings().size(), 1u);
  EXPECT_EQ(r.shortfall_warnings()[0],
            "format_following made 17 of the 20 samples asked for (15% short): more than a tenth short");
}

TEST(SftPrepareReport, NegativesReportRejectedPairsAndMissingToolLists) {
  NegativesConfig cfg;
  cfg.pairs = {{"What is 2+2?", "4."}, {"Capital of France?", "Paris."}, {"Hi", "Hello!"},
               {"Weather?", "Action: weather_api"}};
  TransformReport r("negatives");
  auto out = make_negative_samples({}, cfg, r);  // no tool sources: no list to show
  EXPECT_EQ(out.size(), 3u);
  ASSERT_EQ(r.shortfalls.size(), 2u);
  EXPECT_EQ(r.shortfalls[0].what, "pairs");
  EXPECT_EQ(r.shortfalls[0].asked, 4);
  EXPECT_EQ(r.shortfalls[0].made, 3);
  EXPECT_EQ(r.shortfalls[1].what, "samples with a tool list");
  EXPECT_EQ(r.shortfalls[1].asked, r.get("with_tools_unavailable"));
  EXPECT_GT(r.shortfalls[1].asked, 0);
  EXPECT_EQ(r.shortfalls[1].made, 0);
  EXPECT_EQ(r.shortfall_warnings().size(), 2u);
}

}  // namespace
}  // namespace agenttune
