// Tool definitions and structured calls: templates whose format has no place for them refuse a
// conversation that carries any (rendering the rest would train on a conversation that lost what
// the model saw or said), in every entry point, naming the conversation, the template and the fix.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "agenttune/chat/template.h"
#include "agenttune/chat/template_tokenizers.h"
#include "chat_cases.h"
#include "error_of.h"

namespace agenttune {
namespace {

using testing::error_of;
using testing::turn;

Conversation plain() {
  Conversation c;
  c.id = "conv_7";
  c.source = "toolbench";
  c.turns = {turn(Role::User, "Weather in Paris?"), turn(Role::Assistant, "Let me check."),
             turn(Role::Tool, "21 C"), turn(Role::Assistant, "21 C.")};
  return c;
}

TEST(ChatTemplateTools, TemplatesWithoutToolsRefuseThem) {
  Conversation offered = plain();
  offered.tools = {{"get_weather", R"({"type": "function", "function": {"name": "get_weather"}})"}};
  Conversation called = plain();
  called.turns[1].tool_calls = {{"get_weather", R"({"city": "Paris"})", "call_1"}};
  const auto& able = tool_template_names();
  size_t refusing = 0;
  for (const auto& name : template_names()) {
    if (std::find(able.begin(), able.end(), name) != able.end()) continue;
    ++refusing;
    const auto tmpl = make_template(name);
    EXPECT_FALSE(tmpl->render_text(plain()).empty()) << name;  // the same conversation without them renders
    for (const Conversation* c : {&offered, &called}) {
      for (const std::string& msg : {error_of([&] { tmpl->render_text(*c); }),
                                     error_of([&] { tmpl->generation_prompt(testing::before_last_assistant(*c)); })}) {
        EXPECT_NE(msg.find("chat template " + name + " cannot render tool"), std::string::npos) << msg;
        EXPECT_NE(msg.find("toolbench record -1 (id conv_7)"), std::string::npos) << msg;
        EXPECT_NE(msg.find(c == &offered ? "1 tool definition(s) and 0 call(s)" : "0 tool definition(s) and 1 call(s)"),
                  std::string::npos) << msg;
        EXPECT_NE(msg.find("llama-3"), std::string::npos) << msg << ": names the templates that render them";
      }
    }
  }
  // llama-2-chat, agentlm, agent-flan, chatml, toolllama, vicuna.
  EXPECT_EQ(refusing, 6u);
}

// A call belongs to an assistant turn, whatever the template.
TEST(ChatTemplateTools, CallsOnlyInAssistantTurns) {
  for (const std::string name : {"llama-3", "chatml"}) {
    Conversation c = plain();
    c.turns[0].tool_calls = {{"get_weather", R"({"city": "Paris"})", ""}};
    const std::string msg = error_of([&] { make_template(name)->render_text(c); });
    EXPECT_NE(msg.find("turn 0 is a user turn with tool_calls"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(id conv_7)"), std::string::npos) << msg;
  }
}

// Tool definitions and arguments are JSON objects; anything else is an error naming where it sits.
TEST(ChatTemplateTools, Llama3NamesBadToolJson) {
  Conversation c = plain();
  c.turns[1].content = "";
  c.turns[1].tool_calls = {{"get_weather", R"({"city": "Paris")", ""}};
  c.tools = {{"get_weather", R"({"type": "function", "function": {"name": "get_weather"}})"}};
  std::string msg = error_of([&] { make_template("llama-3")->render_text(c); });
  EXPECT_NE(msg.find("chat template llama-3: toolbench record -1 (id conv_7): the arguments of the call in turn 1"),
            std::string::npos) << msg;
  c.turns[1].tool_calls[0].arguments = R"({"city": "Paris"})";
  c.tools[0].json = R"(["get_weather"])";
  msg = error_of([&] { make_template("llama-3")->render_text(c); });
  EXPECT_NE(msg.find("(id conv_7): tool definition 0: expected a JSON object"), std::string::npos) << msg;
  c.tools[0].json = R"({"type": "function", "function": {"name": "get_weather"}})";
  EXPECT_NE(make_template("llama-3")->render_text(c).find("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"),
            std::string::npos);
}

}  // namespace
}  // namespace agenttune
