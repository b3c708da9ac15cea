// The tokenizer's fast BPE (src/tokenizer/fast_bpe.h) must give exactly libsentencepiece's ids,
// both on its own and inside Tokenizer::encode (which prepare, prepare_sft and the chat templates
// use): the tokenizer parity corpus, generated code-heavy documents, and seeded random strings
// that stress whitespace runs, the "▁" mark itself, byte fallback, invalid UTF-8 (SentencePiece's
// U+FFFD path, which the fast path hands back to libsentencepiece), the chat templates' markers
// and ChatML's added tokens (matched by encode, plain text to encode_as_text), from several
// threads at once.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <random>
#include <thread>

#include "../../src/tokenizer/fast_bpe.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/files.h"
#include "generated_docs.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using tokenizer_detail::FastBpe;

std::filesystem::path llama_model() { return testing::shared_fixture("llama2-tokenizer.model"); }

// Parity corpus + generated documents + `n` random concatenations of `frags` (seeded).
std::vector<std::string> texts_with(const std::vector<std::string>& frags, size_t n, uint32_t seed) {
  std::vector<std::string> texts = testing::generated_docs(200, 11);
  std::ifstream corpus(testing::source_dir() / "data" / "tokenizer" / "parity_corpus.jsonl");
  for (std::string line; std::getline(corpus, line);)
    if (!line.empty()) texts.push_back(nlohmann::json::parse(line).get<std::string>());
  std::mt19937 rng(seed);
  for (size_t i = 0; i < n; ++i) {
    std::string s;
    for (int k = 1 + rng() % 16; k > 0; --k) s += frags[rng() % frags.size()];
    texts.push_back(s);
  }
  texts.push_back(std::string(5000, 'a') + " " + std::string(300, ' ') + "z");
  texts.push_back("");
  return texts;
}

const std::vector<std::string> kFrags = {
    " ", "  ", "    ", "\t", "\n", "\r\n", "the", "The", "x", "_", "{", "}", "42", "3.14", "é", "日本",
    "😀", "👍🏽", "\u0d46", "\u0d3f", "\u0001", "𠜎", "▁", "▁▁", " ▁", "<s>", "</s>", "<unk>", "<0x41>",
    "мир", "def", "::", "->", "aaaa", "0000", "[INST]", " [/INST]", "<<SYS>>\n", "\n<</SYS>>\n\n",
    "<|im_start|>", "<|im_end|>", "user\n", "ASSISTANT:", "Thought:", "Action:", "\xEF\xBF\xBD"};

TEST(FastBpe, MatchesSentencePieceExactly) {
  const auto model = llama_model();
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  std::string why;
  auto bpe = FastBpe::load(model, &why);
  ASSERT_TRUE(bpe) << "the Llama-2 model should take the fast path: " << why;
  const auto sp = Tokenizer::load(model, /*fast_bpe=*/false);
  ASSERT_FALSE(sp.uses_fast_bpe());
  const auto texts = texts_with(kFrags, 2000, 99);
  FastBpe::Cache cache;
  for (int pass = 0; pass < 2; ++pass) {  // the second pass answers from the word cache
    for (size_t i = 0; i < texts.size(); ++i) {
      std::vector<int32_t> ids = {7};  // encode appends
      ASSERT_TRUE(bpe->encode(texts[i], ids, cache));
      auto want = sp.encode(texts[i]);
      want.insert(want.begin(), 7);
      ASSERT_EQ(ids, want) << "text #" << i << ": " << nlohmann::json(texts[i]).dump();
    }
  }
}

TEST(FastBpe, DeclinesInvalidUtf8AndLeavesTheOutputAlone) {
  const auto model = llama_model();
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto bpe = FastBpe::load(model, nullptr);
  ASSERT_TRUE(bpe);
  // Stray continuation, overlong "/", a surrogate, past U+10FFFF, truncated 3- and 4-byte forms.
  const char* bad[] = {"a\x80 b", "x \xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "ok \xE2\x96", "\xF0\x9F\x98"};
  for (size_t i = 0; i < std::size(bad); ++i) {
    std::vector<int32_t> ids = {1, 2};
    EXPECT_FALSE(bpe->encode(bad[i], ids)) << "#" << i;
    EXPECT_EQ(ids, (std::vector<int32_t>{1, 2}));
  }
  std::vector<int32_t> ids;
  EXPECT_TRUE(bpe->encode("\xEF\xBF\xBD \xF4\x8F\xBF\xBF \xEE\x80\x80", ids));  // U+FFFD, U+10FFFF, U+E000
  EXPECT_FALSE(ids.empty());
}

// Tokenizer::encode on the fast path against the same Tokenizer kept on libsentencepiece, with
// ChatML's tokens added to both, from 2 threads sharing one Tokenizer; invalid UTF-8 included.
TEST(FastBpe, TokenizerEncodeEqualsSentencePieceFromManyThreads) {
  const auto model = llama_model();
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto fast = Tokenizer::load(model);
  auto sp = Tokenizer::load(model, /*fast_bpe=*/false);
  ASSERT_TRUE(fast.uses_fast_bpe());
  for (auto* t : {&fast, &sp})
    for (const char* added : {"<|im_start|>", "<|im_end|>", "</s>"}) t->add_token(added);
  auto frags = kFrags;
  for (const char* bad : {"\x80", "\xC0\xAF", "\xED\xA0\x80", "\xF8", "\xE2\x96"}) frags.push_back(bad);
  frags.push_back(std::string(1, '\0'));
  const auto texts = texts_with(frags, 3000, 7);
  std::vector<std::vector<int32_t>> want;
  size_t invalid = 0;
  const auto bpe = FastBpe::load(model, nullptr);
  for (const auto& t : texts) {
    want.push_back(sp.encode(t, true, true));
    std::vector<int32_t> probe;
    invalid += !bpe->encode(t, probe);
  }
  EXPECT_GT(invalid, 100u) << "the random strings should exercise the fallback";
  std::vector<std::string> mismatch(2);
  auto check = [&](int worker) {
    for (int pass = 0; pass < 2; ++pass)
      for (size_t i = worker; i < texts.size(); i += 1 + (pass == 1))  // overlapping, both threads
        if (fast.encode(texts[i], true, true) != want[i] && mismatch[worker].empty())
          mismatch[worker] = nlohmann::json(texts[i]).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  std::thread other(check, 1);
  check(0);
  other.join();
  EXPECT_EQ(mismatch[0], "");
  EXPECT_EQ(mismatch[1], "");
  // And encode_into appends after what is there.
  std::vector<int32_t> ids = {5};
  fast.encode_into(texts[3], ids, true, false);
  auto expect = sp.encode(texts[3], true, false);
  expect.insert(expect.begin(), 5);
  EXPECT_EQ(ids, expect);
}

// encode_as_text on the fast path, with ChatML's tokens and "</s>" registered, equals
// libsentencepiece on the same text with no added tokens at all: spelled added tokens are text.
TEST(FastBpe, EncodeAsTextEqualsSentencePieceWithoutAddedTokens) {
  const auto model = llama_model();
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  auto fast = Tokenizer::load(model);
  const auto sp = Tokenizer::load(model, /*fast_bpe=*/false);
  ASSERT_TRUE(fast.uses_fast_bpe());
  for (const char* added : {"<pad>", "<|im_start|>", "<|im_end|>", "<|im_sep|>", "</s>"}) fast.add_token(added);
  auto frags = kFrags;
  for (const char* more : {"<pad>", "<|im_sep|>", "\x80", "\xE2\x96"}) frags.push_back(more);
  for (const auto& t : texts_with(frags, 2000, 13)) {
    std::vector<int32_t> ids;
    fast.encode_as_text(t, ids);
    ASSERT_EQ(ids, sp.encode(t)) << nlohmann::json(t).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
}

// A model whose normalizer the fast path does not reproduce stays on libsentencepiece, with the
// reason. Protobuf merges a repeated singular message field, so appending a normalizer_spec with
// one field changes just that field.
TEST(FastBpe, RefusesModelsItCannotReproduce) {
  const auto model = llama_model();
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  const std::string proto = read_text_file(model);
  const std::vector<std::pair<std::string, std::string>> variants = {
      {std::string("\x1a\x0a\x0a\x08nmt_nfkc", 12), "normalizer"},           // name: nmt_nfkc
      {std::string("\x1a\x02\x18\x00", 4), "normalizer"},                    // add_dummy_prefix: false
      {std::string("\x1a\x02\x20\x01", 4), "normalizer"},                    // remove_extra_whitespaces
      {std::string("\x12\x02\x18\x01", 4), "not a BPE model"},               // model_type: UNIGRAM
      {std::string("\x0a\x07\x0a\x03<x>\x18\x04", 9), "user-defined"}};     // a USER_DEFINED piece
  const auto dir = testing::scratch_dir();
  for (const auto& [suffix, reason] : variants) {
    std::string why;
    EXPECT_FALSE(FastBpe::from_proto(proto + suffix, &why));
    EXPECT_NE(why.find(reason), std::string::npos) << why;
    std::ofstream(dir / "variant.model", std::ios::binary) << proto + suffix;
    auto tok = Tokenizer::load(dir / "variant.model");
    EXPECT_FALSE(tok.uses_fast_bpe()) << reason;
  }
  std::string why;
  EXPECT_TRUE(FastBpe::from_proto(proto, &why)) << why;
}

}  // namespace
}  // namespace agenttune
