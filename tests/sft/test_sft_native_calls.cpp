// datasets[].tool_calls: the bundled ToolBench and Agent-FLAN samples prepared for qwen2.5 and
// llama-3 come out as the family's native calls (tools offered as the template expects), or as
// ReAct text when asked; the settings that cannot work are errors naming both sides.
#include <gtest/gtest.h>

#include <map>

#include "agenttune/config/load.h"
#include "agenttune/data/sft_prepare.h"
#include "agenttune/util/error.h"
#include "sft_test_util.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using testing::sample;

fs::path family_tokenizer(const std::string& name) {
  return testing::source_dir() / ".deps" / "tokenizers" / name;
}

#define REQUIRE_FAMILY_TOKENIZER(name)                               \
  if (!fs::exists(family_tokenizer(name) / "tokenizer.json"))        \
  GTEST_SKIP() << family_tokenizer(name) << " missing: run ctest -R oracle.bpe_tokenizers first"

struct Prepared {
  SftPrepareReport report;
  std::map<std::string, std::string> text;     // conversation id -> rendered text
  std::map<std::string, int64_t> trained;      // conversation id -> trained tokens
};

Prepared prepare(const std::string& tmpl, const std::string& tokenizer, ToolCallForm form) {
  SftPrepareConfig cfg = testing::base_config(tmpl);
  cfg.tokenizer = family_tokenizer(tokenizer);
  cfg.datasets = {testing::dataset("toolbench", sample("toolbench_sft.json"), "unused_tb", DatasetFormat::ToolBench),
                  testing::dataset("agentflan", sample("agentflan.jsonl"), "unused_af", DatasetFormat::AgentFlan)};
  for (auto& d : cfg.datasets) d.tool_calls = form;
  auto tmpl_obj = make_template(tmpl);
  Prepared out;
  SftPrepareHooks hooks;
  hooks.write = false;
  hooks.on_kept = [&](const std::string&, const Conversation& c, const RenderedSample& s) {
    out.text[c.id] = tmpl_obj->render_text(c);
    out.trained[c.id] = s.num_trained();
  };
  out.report = prepare_sft(cfg, hooks);
  return out;
}

TEST(SftNativeCalls, QwenRendersHermesCallsFromToolBenchAndAgentFlan) {
  REQUIRE_FAMILY_TOKENIZER("qwen2.5");
  auto p = prepare("qwen2.5", "qwen2.5", ToolCallForm::Auto);
  const auto& tb = p.report.datasets.at(0).tool_calls;
  EXPECT_EQ(tb.get("conversations"), 4);
  EXPECT_EQ(tb.get("native"), 3);
  // The Mars trajectory ends in Finish's give_up_and_restart, which has no native form.
  EXPECT_EQ(tb.get("text.unlisted_tool"), 1);
  const auto& af = p.report.datasets.at(1).tool_calls;
  EXPECT_EQ(af.get("native"), 2);  // toolbench_react_301 and the negative with tools offered
  EXPECT_EQ(af.get("text.no_tool_list"), 3);  // OS, DB and WebShop trajectories
  EXPECT_NE(p.report.datasets.at(1).summary_line().find("tool calls: 2 conversations native"), std::string::npos)
      << p.report.datasets.at(1).summary_line();
  const std::string& step1 = p.text.at("Step 1: What is the temperature in Reykjavik right now, in Fahrenheit?");
  EXPECT_NE(step1.find("# Tools"), std::string::npos) << step1;
  EXPECT_NE(step1.find("<tool_call>\n{\"name\": \"current_for_weatherly\", \"arguments\": {\"city\": \"Reykjavik\"}}\n"
                       "</tool_call>"),
            std::string::npos)
      << step1;
  EXPECT_EQ(step1.find("Action Input:"), std::string::npos) << step1;
  EXPECT_EQ(step1.find("You are AutoGPT"), std::string::npos) << step1;
  const std::string& flan = p.text.at("toolbench_react_301");
  EXPECT_NE(flan.find("<tool_response>\n{\"flights\""), std::string::npos) << flan;
  EXPECT_NE(flan.find("Yes, DY1302 departs"), std::string::npos) << flan;
  EXPECT_GT(p.trained.at("toolbench_react_301"), 0);
}

TEST(SftNativeCalls, LlamaRendersJsonCallsWithoutTheThought) {
  REQUIRE_FAMILY_TOKENIZER("llama3");
  auto p = prepare("llama-3", "llama3", ToolCallForm::Native);
  EXPECT_EQ(p.report.datasets.at(0).tool_calls.get("native"), 3);
  EXPECT_GT(p.report.datasets.at(0).tool_calls.get("thoughts_dropped"), 0);
  const std::string& step1 = p.text.at("Step 1: What is the temperature in Reykjavik right now, in Fahrenheit?");
  EXPECT_NE(step1.find("{\"name\": \"current_for_weatherly\", \"parameters\": {\"city\": \"Reykjavik\"}}"),
            std::string::npos)
      << step1;
  EXPECT_EQ(step1.find("I need the current conditions"), std::string::npos) << step1;
}

TEST(SftNativeCalls, TextKeepsTheReActSteps) {
  REQUIRE_FAMILY_TOKENIZER("qwen2.5");
  auto p = prepare("qwen2.5", "qwen2.5", ToolCallForm::Text);
  EXPECT_TRUE(p.report.datasets.at(0).tool_calls.counts.empty());
  EXPECT_EQ(p.report.datasets.at(0).tool_calls_line(), "");
  const std::string& step1 = p.text.at("Step 1: What is the temperature in Reykjavik right now, in Fahrenheit?");
  EXPECT_NE(step1.find("Action: current_for_weatherly\nAction Input:"), std::string::npos) << step1;
  EXPECT_EQ(step1.find("<tool_call>"), std::string::npos) << step1;
}

TEST(SftNativeCalls, SettingsThatCannotWorkAreErrors) {
  auto message = [](const std::string& text) {
    try {
      load_config_text<SftPrepareConfig>(text, ConfigSource{"/cfg/sft.yaml", "/cfg", {}}, {});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string ds = "datasets: [{name: tb, paths: [x], output: o, tool_calls: native";
  const auto chatml = message("tokenizer: t.model\ntemplate: chatml\n" + ds + "}]\n");
  for (const char* part : {"datasets[0] (tb).tool_calls: native", "template chatml", "llama-3", "qwen2.5"})
    EXPECT_NE(chatml.find(part), std::string::npos) << part << " in: " << chatml;
  const auto transform = message("tokenizer: t\ntemplate: qwen2.5\n" + ds + ", transform: true}]\n");
  EXPECT_NE(transform.find("exclude each other"), std::string::npos) << transform;
  const auto spelling = message("tokenizer: t\ntemplate: qwen2.5\n" + std::string("datasets: [{name: tb, paths: [x], "
                                                                                   "output: o, tool_calls: json}]\n"));
  EXPECT_NE(spelling.find("native"), std::string::npos) << spelling;
  // auto and text are fine with any template.
  EXPECT_EQ(message("tokenizer: t\ntemplate: chatml\ndatasets: [{name: tb, paths: [x], output: o, tool_calls: auto}]\n"),
            "");
}

}  // namespace
}  // namespace agenttune
