// `agenttune prepare` on SFT datasets as a user runs it (issue 22, items 5 and 6): a file in
// another schema than its `format` exits 2 naming the format to use (before: exit 0, AgentInstruct's
// "Ok." turns trained); the summary accounts for every record (before: "32 samples in, 32 kept,
// dropped {}" for 33 records) and a transform's shortfall is a warning (before: nothing).
#include <gtest/gtest.h>

#include <fstream>

#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using testing::agenttune;

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

std::string head(const fs::path& tok) { return "tokenizer: " + tok.string() + "\ntemplate: llama-2-chat\n"; }

TEST(PrepareReport, AgentInstructReadAsShareGptExits2NamingTheFormat) {
  auto tok = testing::shared_fixture("llama2-tokenizer.model");
  if (tok.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto dir = testing::scratch_dir();
  const auto sample = testing::source_dir() / "data" / "samples" / "agentinstruct.jsonl";
  write(dir / "p.yaml", head(tok) + "datasets:\n  - {name: ai, paths: [" + sample.string() +
                            "], format: sharegpt, output: out}\n");
  testing::expect_clean_error(agenttune("prepare --no-progress --config " + (dir / "p.yaml").string()),
                              {sample.string() + ": record 0 (line 1): field 'conversations[0].loss'",
                               "looks like AgentInstruct (per-turn `loss`)", "use format: agentinstruct"});
  EXPECT_FALSE(fs::exists(dir / "out" / "manifest.json"));
}

TEST(PrepareReport, SummaryCountsEveryRecordAndWarnsOfAShortfall) {
  auto tok = testing::shared_fixture("llama2-tokenizer.model");
  if (tok.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto dir = testing::scratch_dir();
  std::string chat;
  for (int i = 0; i < 32; ++i)
    chat += R"({"conversations":[{"from":"human","value":"q)" + std::to_string(i) +
            R"("},{"from":"gpt","value":"a"}]})" "\n";
  chat += "{\"conversations\": [\n";  // one unreadable line
  write(dir / "chat.jsonl", chat);
  const auto toolbench = testing::source_dir() / "data" / "samples" / "toolbench_sft.json";
  write(dir / "p.yaml", head(tok) +
                            "format_following_output: ff\n"
                            "transforms: {format_following: {samples: 20}, negatives: {enabled: false}}\n"
                            "datasets:\n"
                            "  - {name: chat, paths: [chat.jsonl], format: sharegpt, output: chat_out,\n"
                            "     policies: {bad_record: drop}}\n"
                            "  - {name: toolbench, paths: [" + toolbench.string() +
                            "], format: toolbench, output: tb_out, transform: true}\n");
  auto r = agenttune("prepare --config " + (dir / "p.yaml").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  for (const std::string& f :
       {"chat -> " + (dir / "chat_out").string() + ": 33 records in = 32 kept + 1 dropped {malformed_json=1}; 32 documents",
        "toolbench -> " + (dir / "tb_out").string() + ": 4 records in = 4 kept + 0 dropped {}",
        "format_following -> " + (dir / "ff").string() + ": 2 generated = 2 kept + 0 dropped {}",
        std::string("] warning sft prepare: format_following made 2 of the 20 samples asked for (90% short): the 4 "
                    "conversations scanned hold 2 distinct first tool calls")})
    EXPECT_NE(r.out.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.out;
}

}  // namespace
}  // namespace agenttune
