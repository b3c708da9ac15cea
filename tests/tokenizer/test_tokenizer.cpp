// Tokenizer behaviour beyond raw SentencePiece: added tokens, special ids, decode, errors, fingerprint.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/error.h"
#include "test_paths.h"

namespace agenttune {
namespace {

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::shared_fixture("llama2-tokenizer.model");
    if (model_.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
    tok_ = Tokenizer::load(model_);
  }
  std::filesystem::path model_;
  Tokenizer tok_;
};

std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST_F(TokenizerTest, SpecialIdsAndVocab) {
  EXPECT_EQ(tok_.bos_id(), 1);
  EXPECT_EQ(tok_.eos_id(), 2);
  EXPECT_EQ(tok_.unk_id(), 0);
  EXPECT_EQ(tok_.pad_id(), -1);
  EXPECT_EQ(tok_.base_vocab_size(), 32000);
  EXPECT_EQ(tok_.vocab_size(), 32000);
  EXPECT_EQ(tok_.id_to_piece(1), "<s>");
  EXPECT_EQ(tok_.id_to_piece(22172), "▁hello");
  EXPECT_EQ(tok_.piece_to_id("▁hello"), 22172);
  EXPECT_EQ(tok_.piece_to_id("<unk>"), 0);
  EXPECT_EQ(tok_.piece_to_id("definitely-not-a-piece"), std::nullopt);
  tok_.set_pad_id(0);
  EXPECT_EQ(tok_.pad_id(), 0);
  EXPECT_THROW(tok_.set_pad_id(32000), Error);
}

TEST_F(TokenizerTest, BosEosAndDecode) {
  EXPECT_EQ(tok_.encode("hello world"), (std::vector<int32_t>{22172, 3186}));
  EXPECT_EQ(tok_.encode("hello world", true, true), (std::vector<int32_t>{1, 22172, 3186, 2}));
  EXPECT_EQ(tok_.encode("", true, false), (std::vector<int32_t>{1}));
  EXPECT_EQ(tok_.decode({1, 22172, 3186, 2}), "hello world");  // control pieces decode to nothing
  EXPECT_EQ(tok_.decode({}), "");
  EXPECT_EQ(tok_.decode({29871, 13, 1792}), "\nuser");
  EXPECT_THROW(tok_.decode({32000}), Error);
  EXPECT_THROW(tok_.decode({-1}), Error);
}

TEST_F(TokenizerTest, AddedTokensGetIdsAfterBaseVocab) {
  EXPECT_EQ(tok_.add_token("<|im_start|>"), 32000);
  EXPECT_EQ(tok_.add_token("<|im_end|>"), 32001);
  EXPECT_EQ(tok_.add_token("<|im_start|>"), 32000);  // re-adding is a lookup
  EXPECT_EQ(tok_.vocab_size(), 32002);
  EXPECT_EQ(tok_.base_vocab_size(), 32000);
  ASSERT_EQ(tok_.added_tokens().size(), 2u);
  EXPECT_EQ(tok_.added_tokens()[1].content, "<|im_end|>");
  EXPECT_EQ(tok_.piece_to_id("<|im_end|>"), 32001);
  EXPECT_EQ(tok_.id_to_piece(32000), "<|im_start|>");
  EXPECT_THROW(tok_.add_token(""), Error);
}

TEST_F(TokenizerTest, AddedTokensSplitBeforeEncoding) {
  Tokenizer base = tok_;  // copies do not see tokens added later (copy-on-write)
  int32_t start = tok_.add_token("<|im_start|>");
  int32_t end = tok_.add_token("<|im_end|>");
  EXPECT_EQ(base.vocab_size(), 32000);
  EXPECT_EQ(base.encode("<|im_end|>").size(), 7u);  // plain text to the base tokenizer

  // Each stretch is encoded on its own, with SentencePiece's dummy prefix: "user\n" -> ▁user <0x0A>.
  std::string text = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n";
  auto ids = tok_.encode(text);
  auto expect = cat({{start}, base.encode("user\nHi there"), {end}, base.encode("\n"), {start},
                     base.encode("assistant\n")});
  EXPECT_EQ(ids, expect);
  EXPECT_EQ(std::vector<int32_t>(ids.begin() + 1, ids.begin() + 3), (std::vector<int32_t>{1404, 13}));
  EXPECT_EQ(tok_.decode(ids), text);
  // Back-to-back tokens, and tokens at both ends, leave no empty stretches behind.
  EXPECT_EQ(tok_.encode("<|im_end|><|im_start|>"), (std::vector<int32_t>{end, start}));
  EXPECT_EQ(tok_.encode("<|im_start|>", true, true), (std::vector<int32_t>{1, start, 2}));
}

TEST_F(TokenizerTest, LongestAddedTokenWins) {
  int32_t shorter = tok_.add_token("<tool>");
  int32_t longer = tok_.add_token("<tool>call");
  auto ids = tok_.encode("<tool>call<tool>x");
  auto expect = cat({{longer, shorter}, Tokenizer(tok_).encode("x")});
  EXPECT_EQ(ids, expect);
  EXPECT_EQ(tok_.decode(ids), "<tool>call<tool>x");
}

TEST_F(TokenizerTest, RegisteringABasePieceKeepsItsId) {
  // "</s>" is a SentencePiece control piece: as text it is plain characters until registered.
  EXPECT_NE(tok_.encode("a</s>"), (std::vector<int32_t>{tok_.encode("a")[0], 2}));
  EXPECT_EQ(tok_.add_token("</s>"), 2);
  EXPECT_EQ(tok_.vocab_size(), 32000);
  auto a = tok_.encode("a");
  EXPECT_EQ(tok_.encode("a</s>"), cat({a, {2}}));
}

// encode_as_text, which chat templates use for all message content, sees only characters: with
// added tokens (and a registered "</s>") in the tokenizer it gives the base tokenizer's ids, no
// added or control id, and decodes back to the text.
TEST_F(TokenizerTest, EncodeAsTextNeverMatchesAddedTokens) {
  Tokenizer base = tok_;
  for (const char* t : {"<|im_start|>", "<|im_end|>", "</s>"}) tok_.add_token(t);
  const std::string text = "hi<|im_end|>\n<|im_start|>assistant\n</s><s><unk> x";
  std::vector<int32_t> ids = {7};  // appends
  tok_.encode_as_text(text, ids);
  EXPECT_EQ(std::vector<int32_t>(ids.begin() + 1, ids.end()), base.encode(text));
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_LT(ids[i], 32000);
    EXPECT_NE(ids[i], tok_.bos_id());
    EXPECT_NE(ids[i], tok_.eos_id());
    EXPECT_NE(ids[i], tok_.unk_id());
  }
  EXPECT_EQ(tok_.decode(std::vector<int32_t>(ids.begin() + 1, ids.end())), text);
  // encode() still matches them, for raw prompts and pretraining text.
  auto matched = tok_.encode(text);
  EXPECT_EQ(std::count(matched.begin(), matched.end(), *tok_.piece_to_id("<|im_start|>")), 1);
  EXPECT_EQ(std::count(matched.begin(), matched.end(), 2), 1);
}

TEST_F(TokenizerTest, FingerprintIsSha256OfTheModelFile) {
  std::string out;
  ASSERT_EQ(testing::run_command("sha256sum '" + model_.string() + "'", &out), 0) << out;
  EXPECT_EQ(tok_.fingerprint(), out.substr(0, 64));
  EXPECT_EQ(tok_.model_path(), model_);
  // A SentencePiece piece's text depends on its neighbours (the dummy prefix): no bytes per token.
  EXPECT_FALSE(tok_.byte_level());
  EXPECT_THROW(tok_.token_bytes(100), Error);
}

TEST(TokenizerErrors, MissingAndCorruptFilesNameTheFile) {
  auto dir = testing::scratch_dir();
  auto expect_error = [](const std::filesystem::path& p) {
    try {
      Tokenizer::load(p);
      ADD_FAILURE() << "expected an error for " << p;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
    }
  };
  expect_error(dir / "missing.model");
  std::ofstream(dir / "corrupt.model", std::ios::binary) << "this is not a protobuf \xff\xfe\x01";
  expect_error(dir / "corrupt.model");
  std::ofstream(dir / "empty.model", std::ios::binary).flush();
  expect_error(dir / "empty.model");
}

}  // namespace
}  // namespace agenttune
