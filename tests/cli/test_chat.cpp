// `agenttune chat` through the real command line: each turn's prompt is the chat template's
// rendering of the whole conversation so far (the replies included), computed here independently
// with the library, and /reset starts over.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "agenttune/chat/template.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<json> json_lines(const std::string& out) {
  std::vector<json> rows;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') rows.push_back(json::parse(line));
  return rows;
}

TEST(Chat, EachTurnRendersTheWholeConversationWithTheTemplate) {
  const auto model = testing::shared_fixture("llama2-tokenizer.model");
  if (model.empty()) GTEST_SKIP() << "no Llama-2 tokenizer fixture";
  const auto dir = testing::scratch_dir() / "model";
  const auto bin = testing::agenttune_bin();
  std::string out;
  ASSERT_EQ(testing::run_command(bin + " init --config " + (testing::source_dir() / "configs/tiny/model.yaml").string() +
                                     " --out " + dir.string(), &out), 0) << out;
  const auto input = dir.parent_path() / "input.txt";
  std::ofstream(input) << "How many .log files are there?\n\nand in /tmp?\n/reset\nHow many .log files are there?\n";
  ASSERT_EQ(testing::run_command(bin + " chat --json --max-new-tokens 3 --template agentlm --model " + dir.string() +
                                     " < " + input.string() + " 2>/dev/null", &out), 0) << out;
  auto rows = json_lines(out);
  ASSERT_EQ(rows.size(), 3u) << out;  // the blank line is skipped

  auto tmpl = make_template("agentlm");
  Tokenizer tok = Tokenizer::load(model);
  auto prompt_of = [&](const Conversation& c) {
    auto ids = tmpl->generation_prompt_ids(c, tok);
    return std::vector<int64_t>(ids.begin(), ids.end());
  };
  Conversation c;
  c.turns.push_back({Role::User, "How many .log files are there?", std::nullopt, ""});
  EXPECT_EQ(rows[0]["prompt_ids"].get<std::vector<int64_t>>(), prompt_of(c));
  c.turns.push_back({Role::Assistant, rows[0]["text"].get<std::string>(), std::nullopt, ""});
  c.turns.push_back({Role::User, "and in /tmp?", std::nullopt, ""});
  EXPECT_EQ(rows[1]["prompt_ids"].get<std::vector<int64_t>>(), prompt_of(c));
  EXPECT_EQ(rows[2]["prompt_ids"], rows[0]["prompt_ids"]) << "/reset should forget the conversation";
  for (const auto& r : rows) EXPECT_LE(r["new_ids"].size(), 3u);
}

}  // namespace
}  // namespace agenttune
