// qwen2.5 / qwen3 / qwen3-no-think beyond the transformers oracle (test_template_bpe_oracle.cpp runs
// them against the published templates): the default-system option of qwen3, and the errors that
// name what is wrong instead of rendering a guess.
#include <gtest/gtest.h>

#include "agenttune/chat/template.h"
#include "agenttune/util/error.h"
#include "qwen_cases.h"
#include "test_paths.h"

namespace agenttune {
namespace {

const ToolSpec kWeather{"get_weather", R"({"type": "function", "function": {"name": "get_weather", "parameters": {}}})"};

std::string error_of(const std::string& tmpl, const Conversation& c) {
  try {
    make_template(tmpl)->render_text(c);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Qwen3 writes no system turn of its own; TemplateOptions::default_system stands in for a missing
// one, before the tool block too, in the rendering and in jinja() alike.
TEST(QwenTemplates, Qwen3DefaultSystem) {
  Conversation c;
  c.turns = {testing::turn(Role::User, "hi"), testing::turn(Role::Assistant, "yo")};
  const std::string body = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nyo<|im_end|>\n";
  EXPECT_EQ(make_template("qwen3")->render_text(c), body);
  const TemplateOptions o{std::string("Be brief.")};
  EXPECT_EQ(make_template("qwen3", o)->render_text(c), "<|im_start|>system\nBe brief.<|im_end|>\n" + body);
  EXPECT_NE(make_template("qwen3-no-think", o)->jinja().find("'Be brief.'"), std::string::npos);
  c.tools = {kWeather};
  EXPECT_EQ(make_template("qwen3", o)->render_text(c).rfind("<|im_start|>system\nBe brief.\n\n# Tools\n", 0), 0u);
  c.turns.insert(c.turns.begin(), testing::turn(Role::System, "Own."));
  EXPECT_EQ(make_template("qwen3", o)->render_text(c).rfind("<|im_start|>system\nOwn.\n\n# Tools\n", 0), 0u);
}

// Arguments and tool definitions must be JSON objects: anything else is an error naming the
// template, the conversation and the call or tool, for every Qwen template.
TEST(QwenTemplates, MalformedToolJsonIsAnErrorNamingTheConversation) {
  for (const std::string tmpl : {"qwen2.5", "qwen3", "qwen3-no-think"}) {
    SCOPED_TRACE(tmpl);
    auto bad_args = testing::qwen_case("bad_args", {kWeather}, {
        testing::turn(Role::User, "Paris?"), testing::qwen_calls("", {ToolCall{"get_weather", R"({"city": "Paris")", ""}})});
    std::string msg = error_of(tmpl, bad_args.conv);
    EXPECT_NE(msg.find("chat template " + tmpl), std::string::npos) << msg;
    EXPECT_NE(msg.find("(id bad_args) call 0 ('get_weather') arguments: not valid JSON"), std::string::npos) << msg;
    bad_args.conv.turns[1].tool_calls[0].arguments = R"(["Paris"])";
    EXPECT_NE(error_of(tmpl, bad_args.conv).find("expected a JSON object"), std::string::npos);
    bad_args.conv.turns[1].tool_calls[0].arguments = R"({"city": "Paris", "city": "Rome"})";
    EXPECT_NE(error_of(tmpl, bad_args.conv).find("duplicate key \"city\""), std::string::npos);

    auto bad_tool = testing::qwen_case("bad_tool", {ToolSpec{"broken", "{\"type\": \"function\", }"}},
                                       {testing::turn(Role::User, "hi"), testing::turn(Role::Assistant, "yo")});
    msg = error_of(tmpl, bad_tool.conv);
    EXPECT_NE(msg.find("(id bad_tool) tool 0 ('broken'): not valid JSON"), std::string::npos) << msg;
  }
}

// qwen3 needs Qwen3's tokenizer (Qwen2.5's plus <tool_response>, </tool_response>, <think>,
// </think>): with Qwen2.5's the stop ids and the rendering fail naming the missing token.
TEST(QwenTemplates, Qwen3RefusesTheQwenTwoFiveTokenizer) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  if (!std::filesystem::exists(deps / "qwen2.5/tokenizer.json") || !std::filesystem::exists(deps / "qwen3/tokenizer.json"))
    GTEST_SKIP() << deps << " has no Qwen2.5/Qwen3 tokenizer.json (the bpe_tokenizers fixture makes them)";
  const Tokenizer qwen25 = Tokenizer::load(deps / "qwen2.5"), qwen3 = Tokenizer::load(deps / "qwen3");
  try {
    make_template("qwen3")->stop_ids(qwen25);
    FAIL() << "qwen3 took Qwen2.5's tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Qwen3's tokenizer.json"), std::string::npos) << e.what();
  }
  EXPECT_EQ(make_template("qwen3-no-think")->stop_ids(qwen3), std::vector<int32_t>{*qwen3.piece_to_id("<|im_end|>")});
  Conversation c;
  c.turns = {testing::turn(Role::User, "hi"), testing::turn(Role::Assistant, "yo")};
  try {
    make_template("qwen3")->render(c, qwen25);
    FAIL() << "qwen3 rendered with Qwen2.5's tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<think>"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace agenttune
