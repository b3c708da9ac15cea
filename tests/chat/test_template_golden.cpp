// Golden renderings for the templates without a published transformers template to compare with:
// agent-flan, agentlm, toolllama, vicuna (tests/chat/golden/*.json).
//
// How the goldens were derived (tests/chat/py/make_golden.py, then reviewed piece by piece): the
// rendered string of each conversation is spelled out by hand as segments from the rules of
// recipes.md §2, each segment marked trained or not --
//   agent-flan: "<s>" + "<|Human|>െ{c}\n " per system/user/tool turn, "<|Assistant|>െ" + [{c}ി] + "\n "
//               per assistant turn, [..] trained when loss != false;
//   agentlm:    "<s>[INST] <<SYS>>\n{fixed system}\n<</SYS>>\n\n{u} [/INST]" + [" {a} " + "</s>"],
//               later pairs "<s>[INST] {u} [/INST]" + [" {a} " + "</s>"], tool turns as user turns;
//   toolllama:  "<s>Role: {c}\n" for all but the last message, then "Assistant:" + [" {c}" + "</s>"];
//   vicuna:     "<s>{fixed system} " + "USER: {u} " + "ASSISTANT:" + [" {a}" + "</s>"] per pair;
// then SentencePiece encodes each stretch between <s>/</s> in one call and a token is trained when
// it overlaps a trained segment. So the goldens encode the rules independently of src/chat and of
// the Jinja templates; a change of rendering, tokenization or masking shows up here.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "agenttune/chat/template.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using nlohmann::json;

Conversation from_messages(const json& messages, const std::string& id) {
  Conversation c;
  c.id = id;
  c.source = "golden";
  for (const auto& m : messages) {
    Turn t;
    auto role = m["role"].get<std::string>();
    t.role = role == "system" ? Role::System : role == "assistant" ? Role::Assistant
           : role == "tool"   ? Role::Tool   : Role::User;
    t.content = m["content"].get<std::string>();
    if (!m["loss"].is_null()) t.loss = m["loss"].get<bool>();
    c.turns.push_back(t);
  }
  return c;
}

class ChatTemplateGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateGolden, MatchesHandDerivedRendering) {
  auto model = testing::shared_fixture("llama2-tokenizer.model");
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto path = testing::source_dir() / "tests/chat/golden" / (GetParam() + ".json");
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  json g = json::parse(in);
  auto tok = Tokenizer::load(model);
  auto tmpl = make_template(GetParam());
  auto conv = from_messages(g["messages"], GetParam());

  EXPECT_EQ(tmpl->render_text(conv), g["text"].get<std::string>());
  auto r = tmpl->render(conv, tok);
  EXPECT_EQ(r.ids, g["ids"].get<std::vector<int32_t>>());
  std::vector<uint8_t> want;
  for (int v : g["trained"]) want.push_back(static_cast<uint8_t>(v));
  ASSERT_EQ(r.trained.size(), r.ids.size());
  for (size_t i = 0; i < want.size() && i < r.trained.size(); ++i)
    EXPECT_EQ(r.trained[i], want[i]) << "token " << i << " '" << g["pieces"][i].get<std::string>() << "'";
  EXPECT_GT(r.num_trained(), 0);
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatTemplateGolden,
                         ::testing::Values("agent-flan", "agentlm", "toolllama", "vicuna"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

// Agent-FLAN's delimiters are ordinary Llama-2 pieces: each marker must be exactly one token with
// the documented id, every trained run must end with the closing marker, and it is the stop id.
TEST(ChatTemplateGoldenAgentFlan, MarkersAreSingleTokensWithKnownIds) {
  auto model = testing::shared_fixture("llama2-tokenizer.model");
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto tok = Tokenizer::load(model);
  EXPECT_EQ(tok.piece_to_id("\u0d46"), 30840);
  EXPECT_EQ(tok.piece_to_id("\u0d3f"), 30387);
  auto tmpl = make_template("agent-flan");
  EXPECT_EQ(tmpl->stop_ids(tok).front(), 30387);

  std::ifstream in(testing::source_dir() / "tests/chat/golden/agent-flan.json");
  auto conv = from_messages(json::parse(in)["messages"], "tb_42");
  auto r = tmpl->render(conv, tok);
  size_t assistants = 0;
  for (const auto& t : conv.turns) assistants += t.role == Role::Assistant;
  EXPECT_EQ(std::count(r.ids.begin(), r.ids.end(), 30840), static_cast<long>(conv.turns.size()));
  EXPECT_EQ(std::count(r.ids.begin(), r.ids.end(), 30387), static_cast<long>(assistants));
  for (size_t i = 0; i + 1 < r.ids.size(); ++i) {
    if (r.trained[i] && !r.trained[i + 1]) EXPECT_EQ(r.ids[i], 30387) << "trained run ends at " << i;
    if (r.ids[i] == 30840) EXPECT_FALSE(r.trained[i]) << "the turn opener is never trained";
  }
  // The generation prompt ends with the open assistant header, marker included.
  Conversation prompt = conv;
  prompt.turns.resize(1);
  auto ids = tmpl->generation_prompt_ids(prompt, tok);
  EXPECT_EQ(ids.back(), 30840);
}

}  // namespace
}  // namespace agenttune
