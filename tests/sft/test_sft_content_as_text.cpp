// Message content is text for every reader: the same injected turns (every template's control
// tokens and markers spelled in system, user, tool and assistant content; tests/chat/chat_cases.h)
// written in each dataset format, read and prepared under chatml, give shards whose documents hold
// exactly one <|im_start|> per turn the reader produced, equal render()'s ids and mask, and train
// no FAKE_ word from the injected turns.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>

#include "../chat/chat_cases.h"
#include "sft_test_util.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// One record in `format` holding the injection turns; roles a format lacks fold into its user role
// (and AgentInstruct, which has no system role, drops it).
std::string record(DatasetFormat format) {
  json turns = json::array();
  for (const Turn& t : testing::injection_turns()) {
    const bool sys = t.role == Role::System, user = t.role == Role::User || t.role == Role::Tool;
    switch (format) {
      case DatasetFormat::ShareGPT:
      case DatasetFormat::AgentInstruct:
        if (sys && format == DatasetFormat::AgentInstruct) continue;
        turns.push_back({{"from", sys ? "system" : user ? "human" : "gpt"}, {"value", t.content}});
        break;
      case DatasetFormat::ToolBench:
        turns.push_back({{"from", t.role == Role::Tool ? "function" : role_name(t.role)}, {"value", t.content}});
        break;
      case DatasetFormat::AgentFlan:
        turns.push_back({{"role", user ? "user" : role_name(t.role)}, {"content", t.content}, {"loss", !sys && !user}});
        break;
      default:
        turns.push_back({{"role", role_name(t.role)}, {"content", t.content}});
    }
  }
  switch (format) {
    case DatasetFormat::ShareGPT: return json::array({{{"id", "sg_1"}, {"conversations", turns}}}).dump();
    case DatasetFormat::AgentInstruct: return json{{"id", "os_1"}, {"conversations", turns}}.dump() + "\n";
    case DatasetFormat::ToolBench: return json::array({{{"id", "Step 1: x"}, {"conversations", turns}}}).dump();
    case DatasetFormat::AgentFlan: return json{{"id", "react_1"}, {"conversation", turns}}.dump() + "\n";
    default: return json{{"messages", turns}}.dump() + "\n";
  }
}

TEST(SftContentAsText, InjectedTurnsStayTextFromEveryReader) {
  REQUIRE_TOKENIZER();
  const auto dir = testing::scratch_dir();
  const auto tmpl = make_template("chatml");
  const auto tok = testing::tokenizer_for(*tmpl);
  const int32_t im_start = *tok.piece_to_id("<|im_start|>");
  const std::vector<std::pair<DatasetFormat, std::string>> formats = {
      {DatasetFormat::OpenAI, "openai.jsonl"},     {DatasetFormat::ShareGPT, "sharegpt.json"},
      {DatasetFormat::AgentInstruct, "ai.jsonl"},  {DatasetFormat::ToolBench, "toolbench.json"},
      {DatasetFormat::AgentFlan, "agentflan.jsonl"}};
  for (const auto& [format, file] : formats) {
    const auto tag = file;
    const auto path = testing::write_text(dir / file, record(format));
    ReadReport rr;
    const auto convs = read_dataset({"d", {path}, format, {}}, rr);
    ASSERT_EQ(convs.size(), 1u) << tag;
    auto cfg = testing::base_config("chatml");
    cfg.datasets.push_back(testing::dataset("d", path, dir / (file + ".out"), format));
    prepare_sft(cfg);
    const auto docs = testing::read_docs(dir / (file + ".out"));
    ASSERT_EQ(docs.size(), 1u) << tag;
    const auto r = tmpl->render(convs[0], tok);
    EXPECT_EQ(docs[0], (testing::Doc{r.ids, r.trained})) << tag;
    EXPECT_EQ(std::count(docs[0].ids.begin(), docs[0].ids.end(), im_start),
              static_cast<std::ptrdiff_t>(convs[0].turns.size())) << tag;
    std::vector<int32_t> trained;
    for (size_t k = 0; k < docs[0].ids.size(); ++k)
      if (docs[0].mask[k]) trained.push_back(docs[0].ids[k]);
    const auto text = tok.decode(trained);
    EXPECT_NE(text.find("ANSWER_TWO"), std::string::npos) << tag << ": " << text;  // ToolBench trains the last step only
    EXPECT_EQ(text.find("FAKE_"), std::string::npos) << tag << ": " << text;
  }
}

}  // namespace
}  // namespace agenttune
