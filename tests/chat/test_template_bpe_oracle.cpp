// llama-3 and qwen2.5 against transformers' apply_chat_template with each model's own published
// template (tests/chat/fixtures/*.jinja) and real tokenizer.json (.deps/tokenizers, the
// bpe_tokenizers fixture), through tests/chat/py/bpe_chat_oracle.py:
// - render_text() and our jinja() rendering equal the published template's text;
// - ids equal apply_chat_template(tokenize=True), except where content spells an added token (there
//   ours keep it text: they equal the oracle's tokenization with control tokens only where the
//   template wrote them, and differ from transformers, which matches them anywhere);
// - the mask equals the tokens overlapping our jinja()'s {% generation %} spans (tokenizers' offsets);
// - generation prompts equal add_generation_prompt=True.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>

#include "agenttune/chat/template.h"
#include "chat_cases.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using nlohmann::json;

// Conversations beyond the shared ones: long and multi-turn, tool results (single, consecutive,
// first), JSON escapes in tool output, tool calls written as each family writes them, CJK and
// emoji, whitespace runs, CRLF, digits, empty and untrained turns, a system turn mid-conversation.
std::vector<testing::ChatCase> bpe_cases() {
  using R = Role;
  using testing::turn;
  auto conv = [](std::string id, std::vector<Turn> t) {
    Conversation c;
    c.id = id;
    c.source = "test";
    c.turns = std::move(t);
    return testing::ChatCase{id, c};
  };
  std::vector<testing::ChatCase> out = testing::chat_cases();
  std::vector<Turn> long_turns = {turn(R::System, "You are a careful planner.")};
  for (int i = 0; i < 12; ++i) {
    std::string u = "Step " + std::to_string(i) + ": ";
    for (int k = 0; k < 20; ++k) u += "lorem ipsum dolor " + std::to_string(k * i) + ", ";
    long_turns.push_back(turn(R::User, u));
    long_turns.push_back(turn(R::Assistant, "Done with step " + std::to_string(i) + ".\n- ok\n- next", i % 3 != 1));
  }
  out.push_back(conv("long", long_turns));
  out.push_back(conv("llama_tool_call", {
      turn(R::System, "Environment: tools"),
      turn(R::User, "Weather in Paris?"),
      turn(R::Assistant, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"),
      turn(R::Tool, "{\"temp_c\": 21, \"sky\": \"clear\"}"),
      turn(R::Assistant, "It is 21 °C and clear in Paris.")}));
  out.push_back(conv("qwen_tool_call", {
      turn(R::User, "Weather in Paris and Rome?"),
      turn(R::Assistant, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
      turn(R::Tool, "{\"temp_c\": 21}"),
      turn(R::Tool, "{\"temp_c\": 25}"),
      turn(R::Assistant, "Paris 21 °C, Rome 25 °C.")}));
  out.push_back(conv("tool_first", {turn(R::Tool, "boot log: ok"), turn(R::User, "Status?"), turn(R::Assistant, "All good.")}));
  out.push_back(conv("tool_escapes", {
      turn(R::User, "Run it."),
      turn(R::Assistant, "Running."),
      turn(R::Tool, "tab\there \"quoted\" back\\slash\nnew line \x01\x1f ctrl / slash \u00e9 \u2028 😀\r\n"),
      turn(R::Assistant, "Output read.")}));
  out.push_back(conv("cjk_emoji", {
      turn(R::User, "用中文回答：今天天气怎么样？ 日本語もOK。 한국어도요."),
      turn(R::Assistant, "今天晴朗 ☀️，气温 21°C。👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵")}));
  out.push_back(conv("whitespace_runs", {
      turn(R::User, "a    b\t\t c\n\n\n d   "),
      turn(R::Assistant, "x  \n\n   y\t\tz     ")}));
  out.push_back(conv("crlf_digits", {
      turn(R::User, "line1\r\nline2\r\n12345678 3.14159 1e-9 0x7fff"),
      turn(R::Assistant, "Sum: 1234567 + 89 = 1234656\r\n")}));
  out.push_back(conv("empty_assistant", {turn(R::User, "Say nothing."), turn(R::Assistant, ""), turn(R::User, "Now say hi."),
                                         turn(R::Assistant, "hi")}));
  out.push_back(conv("mid_system", {
      turn(R::User, "Hello."), turn(R::Assistant, "Hi."), turn(R::System, "From now on answer in French."),
      turn(R::User, "How are you?"), turn(R::Assistant, "Très bien.")}));
  out.push_back(conv("loss_mixed", {
      turn(R::User, "Q1"), turn(R::Assistant, "A1", false), turn(R::User, "Q2"), turn(R::Assistant, "A2", true),
      turn(R::User, "Q3"), turn(R::Assistant, "A3")}));
  out.push_back(conv("edge_punct", {
      turn(R::System, "  \n"), turn(R::User, "!!!???"), turn(R::Assistant, "'s 're ... --- ```"), turn(R::User, "'ll")}));
  out.push_back(conv("markup", {
      turn(R::User, "<b>bold</b> <tool_response> </tools> <|fake|> <|eot_id"),
      turn(R::Assistant, "<think>\nplan\n</think>\n\nanswer <|python_tag|>x")}));
  out.push_back(conv("single_pair", {turn(R::User, "ping"), turn(R::Assistant, "pong")}));
  out.push_back(conv("three_pairs", {
      turn(R::User, "One?"), turn(R::Assistant, "1"), turn(R::User, "Two?"), turn(R::Assistant, "2"),
      turn(R::User, "Three?"), turn(R::Assistant, "3")}));
  out.push_back(conv("json_answer", {
      turn(R::System, "Answer in JSON."), turn(R::User, "List two colors."),
      turn(R::Assistant, "{\n  \"colors\": [\"red\", \"blue\"],\n  \"count\": 2\n}")}));
  out.push_back(conv("math", {
      turn(R::User, "Solve $x^2 - 5x + 6 = 0$."),
      turn(R::Assistant, "$(x-2)(x-3)=0$, so $x \\in \\{2, 3\\}$; check: 4 − 10 + 6 = 0 ✓")}));
  return out;
}

struct Family {
  std::string tmpl, tokenizer, published;
};

TEST(ChatTemplateBpeOracle, MatchesPublishedTemplates) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  if (!std::filesystem::exists(deps / "llama3/tokenizer.json") || !std::filesystem::exists(deps / "qwen2.5/tokenizer.json"))
    GTEST_SKIP() << deps << " has no Llama-3/Qwen2.5 tokenizer.json (the bpe_tokenizers fixture makes them)";
  if (!std::filesystem::exists(testing::venv_python())) GTEST_SKIP() << "no .venv python oracle";
  const auto fixtures = testing::source_dir() / "tests/chat/fixtures";
  const std::vector<Family> families = {{"llama-3", (deps / "llama3").string(), (fixtures / "llama-3.1-instruct.jinja").string()},
                                        {"qwen2.5", (deps / "qwen2.5").string(), (fixtures / "qwen2.5-instruct.jinja").string()}};
  struct Row {
    std::string tmpl, name;
    RenderedSample ours;
    std::string text, gen_text;
    std::vector<int32_t> gen_ids;
  };
  std::vector<Row> rows;
  json cases = json::array();
  const auto convs = bpe_cases();
  for (const auto& f : families) {
    auto tmpl = make_template(f.tmpl);
    const Tokenizer tok = Tokenizer::load(f.tokenizer);
    for (const auto& c : convs) {
      auto prompt = testing::before_last_assistant(c.conv);
      rows.push_back({f.tmpl, c.name, tmpl->render(c.conv, tok), tmpl->render_text(c.conv),
                      tmpl->generation_prompt(prompt), tmpl->generation_prompt_ids(prompt, tok)});
      cases.push_back({{"tokenizer", f.tokenizer}, {"published", f.published}, {"jinja", tmpl->jinja()},
                       {"messages", testing::messages_json(c.conv)}, {"gen_messages", testing::messages_json(prompt)}});
    }
  }
  const auto dir = testing::scratch_dir();
  std::ofstream(dir / "bpe_in.json") << json{{"cases", cases}}.dump();
  const std::string cmd = testing::venv_python().string() + " " +
                          (testing::source_dir() / "tests/chat/py/bpe_chat_oracle.py").string() + " " +
                          (dir / "bpe_in.json").string() + " " + (dir / "bpe_out.json").string();
  std::string log;
  ASSERT_EQ(testing::run_command(cmd, &log), 0) << log;
  const json out = json::parse(std::ifstream(dir / "bpe_out.json"));
  ASSERT_EQ(out["cases"].size(), rows.size());

  std::map<std::string, int> exact, trained, spelled;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const json& o = out["cases"][i];
    const auto tag = row.tmpl + "/" + row.name;
    EXPECT_EQ(row.text, o["text"].get<std::string>()) << tag;
    EXPECT_EQ(o["ours_text"].get<std::string>(), o["text"].get<std::string>()) << tag << ": jinja() vs published";
    EXPECT_EQ(row.ours.ids, o["ids"].get<std::vector<int32_t>>()) << tag;
    EXPECT_EQ(row.ours.trained, o["mask"].get<std::vector<uint8_t>>()) << tag;
    EXPECT_EQ(row.gen_text, o["gen_text"].get<std::string>()) << tag << " generation prompt";
    EXPECT_EQ(row.gen_ids, o["gen_ids"].get<std::vector<int32_t>>()) << tag << " generation prompt";
    if (o["spells_added"].get<bool>()) {
      // transformers turns the spelled control tokens into real ones; we keep them text.
      EXPECT_NE(row.ours.ids, o["hf_ids"].get<std::vector<int32_t>>()) << tag;
      ++spelled[row.tmpl];
    } else {
      EXPECT_EQ(row.ours.ids, o["hf_ids"].get<std::vector<int32_t>>()) << tag;
      EXPECT_EQ(row.gen_ids, o["hf_gen_ids"].get<std::vector<int32_t>>()) << tag << " generation prompt";
      ++exact[row.tmpl];
    }
    trained[row.tmpl] += static_cast<int>(row.ours.num_trained());
  }
  for (const auto& f : families) {
    // At least 20 conversations equal to apply_chat_template id for id, and masks that train something.
    EXPECT_GE(exact[f.tmpl], 20) << f.tmpl;
    EXPECT_GT(trained[f.tmpl], 100) << f.tmpl;
    std::cout << f.tmpl << ": " << exact[f.tmpl] << " conversations equal to apply_chat_template, " << spelled[f.tmpl]
              << " spelling control tokens (kept text), " << trained[f.tmpl] << " trained tokens\n";
  }
}

// The stop ids are the family's end-of-turn tokens; a tokenizer without them is an error naming it.
TEST(ChatTemplateBpeOracle, StopIdsAndWrongTokenizer) {
  const auto deps = testing::source_dir() / ".deps/tokenizers";
  if (!std::filesystem::exists(deps / "llama3/tokenizer.json") || !std::filesystem::exists(deps / "qwen2.5/tokenizer.json"))
    GTEST_SKIP() << deps << " has no Llama-3/Qwen2.5 tokenizer.json (the bpe_tokenizers fixture makes them)";
  const Tokenizer llama = Tokenizer::load(deps / "llama3"), qwen = Tokenizer::load(deps / "qwen2.5");
  EXPECT_EQ(make_template("llama-3")->stop_ids(llama),
            (std::vector<int32_t>{*llama.piece_to_id("<|eot_id|>"), *llama.piece_to_id("<|eom_id|>")}));
  EXPECT_EQ(make_template("qwen2.5")->stop_ids(qwen), std::vector<int32_t>{*qwen.piece_to_id("<|im_end|>")});
  Conversation c;
  c.turns = {testing::turn(Role::User, "hi"), testing::turn(Role::Assistant, "yo")};
  try {
    make_template("qwen2.5")->render(c, llama);
    FAIL() << "qwen2.5 rendered with Llama-3's tokenizer";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("<|im_start|>"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_template("llama-3")->stop_ids(qwen), std::exception);
}

// TemplateOptions::default_system replaces Qwen's default sentence and fills Llama-3's empty system
// text, in the rendering and in jinja() alike.
TEST(ChatTemplateBpeOracle, DefaultSystemOption) {
  Conversation c;
  c.turns = {testing::turn(Role::User, "hi"), testing::turn(Role::Assistant, "yo")};
  TemplateOptions o{std::string("Be brief.")};
  EXPECT_EQ(make_template("qwen2.5", o)->render_text(c),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n");
  EXPECT_NE(make_template("qwen2.5", o)->jinja().find("'Be brief.'"), std::string::npos);
  EXPECT_NE(make_template("llama-3", o)->render_text(c).find("Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"),
            std::string::npos);
  EXPECT_NE(make_template("llama-3", o)->jinja().find("'Be brief.'"), std::string::npos);
}

}  // namespace
}  // namespace agenttune
