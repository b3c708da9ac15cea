// Template behaviour that needs no Python oracle: the factory, errors, stop ids, added tokens,
// empty-loss samples and generation prompts lining up with training renderings (content that
// spells control tokens: test_content_as_text.cpp).
#include <gtest/gtest.h>

#include <algorithm>

#include "agenttune/chat/template.h"
#include "agenttune/chat/template_tokenizers.h"
#include "agenttune/util/error.h"
#include "error_of.h"
#include "chat_cases.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using testing::turn;

Tokenizer llama2() { return Tokenizer::load(testing::shared_fixture("llama2-tokenizer.model")); }
#define REQUIRE_TOKENIZER()                                                  \
  if (testing::shared_fixture("llama2-tokenizer.model").empty())             \
  GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found"

Conversation make_conv(std::vector<Turn> turns) {
  Conversation c;
  c.id = "c1";
  c.source = "unit";
  c.record = 7;
  c.turns = std::move(turns);
  return c;
}

using agenttune::testing::error_of;

TEST(ChatTemplate, FactoryKnowsEveryNameAndRejectsOthers) {
  for (const auto& n : template_names()) {
    auto t = make_template(n);
    EXPECT_EQ(t->name(), n);
    EXPECT_NE(t->jinja().find("{% generation %}"), std::string::npos) << n;
  }
  auto msg = error_of([] { make_template("chatm1"); });
  EXPECT_NE(msg.find("unknown chat template 'chatm1'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'chatml'"), std::string::npos) << msg;
  for (const auto& n : template_names()) EXPECT_NE(msg.find(n), std::string::npos) << msg;
}

TEST(ChatTemplate, RequireTrainedTokensNamesDatasetAndTemplate) {
  EXPECT_NO_THROW(require_trained_tokens("agentinstruct", "agentlm", 1));
  auto msg = error_of([] { require_trained_tokens("agentinstruct", "agentlm", 0); });
  EXPECT_NE(msg.find("agentinstruct"), std::string::npos) << msg;
  EXPECT_NE(msg.find("agentlm"), std::string::npos) << msg;
}

TEST(ChatTemplate, SampleWithoutTrainedTurnsHasEmptyMask) {
  REQUIRE_TOKENIZER();
  auto base = llama2();
  auto conv = make_conv({turn(Role::User, "Say ok."), turn(Role::Assistant, "Ok.", false)});
  for (const auto& n : sentencepiece_template_names()) {
    auto t = make_template(n);
    Tokenizer tok = base;
    prepare_tokenizer(*t, tok);
    auto r = t->render(conv, tok);
    EXPECT_GT(r.ids.size(), 5u) << n;
    EXPECT_EQ(r.num_trained(), 0) << n;
    conv.turns[1].loss = std::nullopt;  // the same turn, now trained
    EXPECT_GT(t->render(conv, tok).num_trained(), 0) << n;
    conv.turns[1].loss = false;
  }
}

TEST(ChatTemplate, Llama2RejectsWhatMetasFormatCannotExpress) {
  auto t = make_template("llama-2-chat");
  auto msg = error_of([&] { t->render_text(make_conv({turn(Role::User, "a"), turn(Role::User, "b")})); });
  EXPECT_NE(msg.find("unit record 7 (id c1)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("alternating"), std::string::npos) << msg;
  msg = error_of([&] { t->render_text(make_conv({turn(Role::User, "a"), turn(Role::Assistant, "b"),
                                                 turn(Role::System, "late")})); });
  EXPECT_NE(msg.find("system turn at position 2"), std::string::npos) << msg;
  msg = error_of([&] { t->generation_prompt(make_conv({turn(Role::User, "a"), turn(Role::Assistant, "b")})); });
  EXPECT_NE(msg.find("ends with a user turn"), std::string::npos) << msg;
}

TEST(ChatTemplate, ChatMLNeedsItsAddedTokens) {
  REQUIRE_TOKENIZER();
  auto t = make_template("chatml");
  auto tok = llama2();
  auto conv = make_conv({turn(Role::User, "hi"), turn(Role::Assistant, "hello")});
  auto msg = error_of([&] { t->render(conv, tok); });
  EXPECT_NE(msg.find("prepare_tokenizer"), std::string::npos) << msg;
  prepare_tokenizer(*t, tok);
  for (int32_t i = 0; i < 5; ++i) EXPECT_EQ(tok.piece_to_id(t->added_tokens()[i]), 32000 + i);
  EXPECT_EQ(tok.vocab_size(), 32005);
  EXPECT_EQ(t->stop_ids(tok), (std::vector<int32_t>{32002, 0}));
  prepare_tokenizer(*t, tok);  // idempotent
  EXPECT_EQ(tok.vocab_size(), 32005);

  auto other = llama2();
  other.add_token("<tool>");
  msg = error_of([&] { prepare_tokenizer(*t, other); });
  EXPECT_NE(msg.find("needs 32000"), std::string::npos) << msg;
  EXPECT_EQ(make_template("agent-flan")->stop_ids(tok).front(), 30387);
  EXPECT_EQ(make_template("llama-2-chat")->stop_ids(tok), std::vector<int32_t>{2});
}

TEST(ChatTemplate, StripFollowsPythonWhitespaceAndOptionsSetSystem) {
  auto conv = make_conv({turn(Role::User, "\u3000\u00a0 hi\t\u2028"), turn(Role::Assistant, "\n\u00e9 ")});
  EXPECT_EQ(make_template("chatml")->render_text(conv),
            "<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n\u00e9<|im_end|>\n");
  TemplateOptions o;
  o.default_system = "Be brief.";
  EXPECT_TRUE(make_template("chatml", o)->render_text(conv).starts_with(
      "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>"));
  EXPECT_EQ(make_template("agentlm", o)->render_text(conv),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n\u3000\u00a0 hi [/INST] \u00e9 </s>");
  EXPECT_EQ(make_template("llama-2-chat")->render_text(conv), "<s>[INST] hi [/INST] \u00e9 </s>");
}

// The generation prompt for a conversation is a prefix of the training rendering of the same
// conversation plus the answer, and the answer's first token is trained: what the model is
// trained to emit is what it is asked to continue at inference.
TEST(ChatTemplate, GenerationPromptIsThePrefixOfTheTrainedAnswer) {
  REQUIRE_TOKENIZER();
  auto base = llama2();
  for (const auto& n : sentencepiece_template_names()) {
    auto t = make_template(n);
    Tokenizer tok = base;
    prepare_tokenizer(*t, tok);
    for (const auto& c : testing::chat_cases()) {
      auto full = c.conv;
      while (!full.turns.empty() && full.turns.back().role != Role::Assistant) full.turns.pop_back();
      if (full.turns.empty() || !trains(full.turns.back())) continue;
      auto prompt = testing::before_last_assistant(full);
      auto p = t->generation_prompt_ids(prompt, tok);
      auto r = t->render(full, tok);
      ASSERT_LT(p.size(), r.ids.size()) << n << "/" << c.name;
      EXPECT_TRUE(std::equal(p.begin(), p.end(), r.ids.begin())) << n << "/" << c.name;
      EXPECT_EQ(r.trained[p.size()], 1) << n << "/" << c.name;
      EXPECT_EQ(t->generation_prompt(prompt), t->render_text(full).substr(0, t->generation_prompt(prompt).size()))
          << n << "/" << c.name;
    }
  }
}

}  // namespace
}  // namespace agenttune
