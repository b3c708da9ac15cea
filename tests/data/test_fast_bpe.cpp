// prepare's fast BPE path (src/data/fast_bpe.h) must give exactly SentencePiece's ids: the
// tokenizer parity corpus, generated code-heavy documents, and random fragments that stress
// whitespace runs, the "▁" mark itself, byte fallback and long unbroken runs.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "../../src/data/fast_bpe.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "prepare_test_util.h"

namespace agenttune {
namespace {

TEST(PrepareFastBpe, MatchesSentencePieceExactly) {
  auto model = testing::llama_tokenizer();
  if (model.empty()) GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  std::string why;
  auto bpe = data::FastBpe::load(model, &why);
  ASSERT_TRUE(bpe) << "the Llama-2 model should take the fast path: " << why;
  auto tok = Tokenizer::load(model);

  std::vector<std::string> texts = testing::generated_docs(200, 11);
  std::ifstream corpus(testing::source_dir() / "data" / "tokenizer" / "parity_corpus.jsonl");
  for (std::string line; std::getline(corpus, line);)
    if (!line.empty()) texts.push_back(nlohmann::json::parse(line).get<std::string>());
  const std::vector<std::string> frags = {" ", "  ", "    ", "\t", "\n", "\r\n", "the", "The", "x", "_", "{", "}",
                                          "42", "3.14", "é", "日本", "😀", "👍🏽", "\u0d46", "\u0001", "𠜎", "▁",
                                          "▁▁", " ▁", "<s>", "</s>", "мир", "def", "::", "->", "aaaa", "0000"};
  std::mt19937 rng(99);
  for (int i = 0; i < 2000; ++i) {
    std::string s;
    for (int k = 1 + rng() % 16; k > 0; --k) s += frags[rng() % frags.size()];
    texts.push_back(s);
  }
  texts.push_back(std::string(5000, 'a') + " " + std::string(300, ' ') + "z");
  data::FastBpe::Session session(bpe);
  for (int pass = 0; pass < 2; ++pass) {  // the second pass answers from the word cache
    for (size_t i = 0; i < texts.size(); ++i) {
      std::vector<int32_t> ids;
      session.encode(texts[i], ids);
      ASSERT_EQ(ids, tok.encode(texts[i])) << "text #" << i << ": " << nlohmann::json(texts[i]).dump();
    }
  }
}

}  // namespace
}  // namespace agenttune
