// write_chat_template_files on its own (the export's end-to-end checks, transformers included, are in
// tests/cli/test_export_tokenizer.cpp): the chat template lands in tokenizer_config.json beside its
// other keys, and a template's added tokens are numbered right after the tokenizer's pieces.
#include <gtest/gtest.h>

#include <fstream>

#include "agenttune/io/hf_tokenizer_config.h"
#include "agenttune/io/json_file.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/error.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

TEST(HfTokenizerConfig, TemplateKeepsTheOtherKeys) {
  const auto dir = testing::scratch_dir();
  write_text(dir / "tokenizer_config.json", R"({"bos_token": "<s>", "chat_template": "old"})");
  write_chat_template_files(dir, "llama-2-chat", "{{ messages }}", {}, 32000);
  const auto tc = read_json_file(dir / "tokenizer_config.json");
  EXPECT_EQ(tc.at("chat_template"), "{{ messages }}");
  EXPECT_EQ(tc.at("bos_token"), "<s>");
  EXPECT_FALSE(tc.contains("added_tokens_decoder"));
  EXPECT_FALSE(fs::exists(dir / "added_tokens.json"));
}

TEST(HfTokenizerConfig, AddedTokensFollowTheModelRowsWithoutATokenizer) {
  const auto dir = testing::scratch_dir();  // no tokenizer_config.json yet, no tokenizer.model
  write_chat_template_files(dir, "chatml", "J", {"<|im_start|>", "<|im_end|>"}, 32002);
  const auto tc = read_json_file(dir / "tokenizer_config.json");
  EXPECT_EQ(tc.at("chat_template"), "J");
  const auto& dec = tc.at("added_tokens_decoder");
  ASSERT_EQ(dec.size(), 2u);
  EXPECT_EQ(dec.at("32000").at("content"), "<|im_start|>");
  EXPECT_EQ(dec.at("32001").at("content"), "<|im_end|>");
  EXPECT_EQ(dec.at("32001").at("special"), true);
  EXPECT_EQ(dec.at("32001").at("normalized"), false);
  const auto ids = read_json_file(dir / "added_tokens.json");
  EXPECT_EQ(ids, nlohmann::json({{"<|im_start|>", 32000}, {"<|im_end|>", 32001}}));
}

TEST(HfTokenizerConfig, AddedTokensFollowTheTokenizersPieces) {
  const auto model = testing::shared_fixture("llama2-tokenizer.model");
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  const auto dir = testing::scratch_dir();
  fs::copy_file(model, dir / "tokenizer.model");
  const int64_t base = Tokenizer::load(model).base_vocab_size();
  // More model rows than pieces + added tokens (padded vocabularies): ids still follow the pieces.
  write_chat_template_files(dir, "chatml", "J", {"<|im_start|>"}, base + 64);
  EXPECT_EQ(read_json_file(dir / "added_tokens.json"), nlohmann::json({{"<|im_start|>", base}}));
  try {
    write_chat_template_files(dir, "chatml", "J", {"<|im_start|>", "<|im_end|>"}, base + 1);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              fmt::format("export --template chatml: the model has {} embedding rows, but the tokenizer's {} "
                          "pieces and the template's 2 added tokens need {}; was it trained with this template?",
                          base + 1, base, base + 2));
  }
}

}  // namespace
}  // namespace agenttune
