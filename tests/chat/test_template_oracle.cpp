// Every template against transformers on the real Llama-2 tokenizer (tests/chat/py/chat_oracle.py):
// - render_text() equals apply_chat_template(tokenize=False) with our jinja(), and for llama-2-chat,
//   agentlm and chatml also an independent reference (Meta's Llama-2-chat template as published on
//   the HF hub, written in the oracle; a plain-Python Lemur rendering);
// - ids equal apply_chat_template(tokenize=True) with transformers' SentencePiece-backed tokenizer,
//   and the mask equals the tokens overlapping the {% generation %} spans (and the reference's
//   prefix-diff spans), with offsets from SentencePiece itself;
// - content that spells control tokens ("<|im_end|>", "</s>", ...) is text: ids equal the oracle's
//   tokenization of the same rendered string with control tokens only where the template wrote
//   them, and differ from apply_chat_template(tokenize=True), which matches them anywhere (the one
//   documented difference from transformers);
// - where transformers' default tokenizers-backed tokenizer agrees with SentencePiece (content
//   without runs of spaces), ids and masks equal that too;
// - generation prompts equal add_generation_prompt=True.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "agenttune/chat/template.h"
#include "agenttune/chat/template_tokenizers.h"
#include "chat_cases.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using nlohmann::json;

std::vector<uint8_t> mask_of(const json& j) {
  std::vector<uint8_t> m;
  for (const auto& v : j) m.push_back(static_cast<uint8_t>(v.get<int>()));
  return m;
}

TEST(ChatTemplateOracle, MatchesTransformersApplyChatTemplate) {
  auto model = testing::shared_fixture("llama2-tokenizer.model");
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  if (!std::filesystem::exists(testing::venv_python())) GTEST_SKIP() << "no .venv python oracle";

  struct Row {
    std::string tmpl;
    testing::ChatCase c;
    RenderedSample ours;
    std::string gen_text;
    std::vector<int32_t> gen_ids;
  };
  std::vector<Row> rows;
  json cases = json::array();
  auto base = Tokenizer::load(model);
  for (const auto& name : sentencepiece_template_names()) {
    auto tmpl = make_template(name);
    Tokenizer tok = base;
    prepare_tokenizer(*tmpl, tok);
    for (const auto& c : testing::chat_cases()) {
      auto prompt = testing::before_last_assistant(c.conv);
      rows.push_back({name, c, tmpl->render(c.conv, tok), tmpl->generation_prompt(prompt),
                      tmpl->generation_prompt_ids(prompt, tok)});
      cases.push_back({{"template", name}, {"jinja", tmpl->jinja()}, {"added_tokens", tmpl->added_tokens()},
                       {"messages", testing::messages_json(c.conv)},
                       {"gen_messages", testing::messages_json(prompt)}});
    }
  }

  auto dir = testing::scratch_dir();
  std::ofstream(dir / "in.json") << json{{"cases", cases}}.dump();
  std::string cmd = testing::venv_python().string() + " " +
                    (testing::source_dir() / "tests/chat/py/chat_oracle.py").string() + " " +
                    model.string() + " " + (dir / "in.json").string() + " " + (dir / "out.json").string() +
                    " " + dir.string();
  std::string log;
  ASSERT_EQ(testing::run_command(cmd, &log), 0) << log;
  json out = json::parse(std::ifstream(dir / "out.json"));
  ASSERT_EQ(out["cases"].size(), rows.size());

  int fast_compared = 0, fast_differs = 0, ref_compared = 0, control_text = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    const json& o = out["cases"][i];
    auto tag = row.tmpl + "/" + row.c.name;
    auto text = make_template(row.tmpl)->render_text(row.c.conv);
    EXPECT_EQ(text, o["text"].get<std::string>()) << tag;
    EXPECT_EQ(row.ours.ids, o["sp_ids"].get<std::vector<int32_t>>()) << tag;
    EXPECT_EQ(row.ours.trained, mask_of(o["sp_mask"])) << tag;
    EXPECT_EQ(row.ours.ids.size(), row.ours.trained.size()) << tag;
    // transformers makes the spelled control tokens real ones; we keep them text.
    if (row.c.control_text) {
      EXPECT_NE(row.ours.ids, o["hf_sp_ids"].get<std::vector<int32_t>>()) << tag;
      EXPECT_NE(row.gen_ids, o["hf_gen_sp_ids"].get<std::vector<int32_t>>()) << tag;
      ++control_text;
    } else {
      EXPECT_EQ(row.ours.ids, o["hf_sp_ids"].get<std::vector<int32_t>>()) << tag;
      EXPECT_EQ(row.gen_ids, o["hf_gen_sp_ids"].get<std::vector<int32_t>>()) << tag;
    }
    if (o.contains("ref_text")) {
      EXPECT_EQ(text, o["ref_text"].get<std::string>()) << tag << " vs the independent reference";
      ASSERT_TRUE(o.contains("ref_mask")) << tag;
      EXPECT_EQ(row.ours.trained, mask_of(o["ref_mask"])) << tag << " vs the reference's spans";
      ++ref_compared;
    }
    if (o["fast_ids"].get<std::vector<int32_t>>() == row.ours.ids) {
      EXPECT_EQ(row.ours.trained, mask_of(o["fast_mask"])) << tag;
      ++fast_compared;
    } else {
      EXPECT_TRUE(row.c.whitespace_runs || row.c.control_text)
          << tag << ": transformers' default tokenizer disagrees";
      ++fast_differs;
    }
    EXPECT_EQ(row.gen_text, o["gen_text"].get<std::string>()) << tag << " generation prompt";
    EXPECT_EQ(row.gen_ids, o["gen_sp_ids"].get<std::vector<int32_t>>()) << tag << " generation prompt";
  }
  // Guard against a vacuous pass: the references and the fast tokenizer must really be compared.
  EXPECT_EQ(ref_compared, 3 * static_cast<int>(testing::chat_cases().size()));
  EXPECT_GE(fast_compared, static_cast<int>(rows.size()) - 3 * 6);
  EXPECT_EQ(control_text, 6);
  std::cout << "fast tokenizer compared on " << fast_compared << " renderings, differs from "
            << "SentencePiece on " << fast_differs << " (whitespace runs, control-token text)\n";
}

}  // namespace
}  // namespace agenttune
