// Token shards on disk: writer -> reader round trips in both dtypes, the manifest, and the checks
// that refuse a corpus which does not match its manifest or the tokenizer in use.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agenttune/data/token_shards.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using Docs = std::vector<std::vector<int32_t>>;

// Writes `shards` (each a list of documents) plus a manifest; returns the manifest.
ShardManifest write_corpus(const fs::path& dir, const std::vector<Docs>& shards, int64_t vocab) {
  ShardManifest m;
  m.tokenizer_sha256 = std::string(64, 'a');
  m.vocab_size = vocab;
  m.dtype = shard_dtype_for_vocab(vocab);
  for (size_t s = 0; s < shards.size(); ++s) {
    TokenShardWriter w(dir, "shard_" + std::to_string(s), vocab);
    for (const auto& d : shards[s]) w.add_document(d);
    ShardEntry e = w.finish();
    m.documents += e.documents;
    m.tokens += e.tokens;
    m.shards.push_back(e);
  }
  m.sources.push_back({"in.jsonl", 123, std::string(64, 'b'), m.documents, m.tokens, 2});
  m.write(dir / "manifest.json");
  return m;
}

std::vector<int64_t> read_doc(const TokenDataset& d, int64_t doc) {
  std::vector<int64_t> out(d.document_length(doc));
  d.read(doc, 0, static_cast<int64_t>(out.size()), out.data());
  return out;
}

void round_trip(int64_t vocab, const std::vector<Docs>& shards, size_t elem) {
  auto dir = testing::scratch_dir();
  write_corpus(dir, shards, vocab);
  auto d = TokenDataset::open(dir, std::string(64, 'a'));
  int64_t g = 0, total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    int64_t shard_tokens = 0;
    for (const auto& doc : shards[s]) {
      EXPECT_EQ(read_doc(d, g), std::vector<int64_t>(doc.begin(), doc.end())) << "document " << g;
      shard_tokens += static_cast<int64_t>(doc.size());
      ++g;
    }
    EXPECT_EQ(fs::file_size(dir / ("shard_" + std::to_string(s) + ".bin")), shard_tokens * elem);
    EXPECT_EQ(fs::file_size(dir / ("shard_" + std::to_string(s) + ".idx")), (shards[s].size() + 1) * 8);
    total += shard_tokens;
  }
  EXPECT_EQ(d.num_documents(), g);
  EXPECT_EQ(d.num_tokens(), total);
  EXPECT_EQ(d.manifest().dtype, elem == 2 ? "uint16" : "uint32");
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_EQ(e.path().string().find(".partial"), std::string::npos) << e.path();
}

TEST(TokenShards, RoundTripUint16) {
  round_trip(32000, {{{1, 5, 31999, 2}, {1, 2}, {}}, {{1, 65, 66, 67, 68, 2}}}, 2);
}

TEST(TokenShards, RoundTripUint32AboveUint16Range) {
  round_trip(100000, {{{1, 70000, 99999, 2}}, {{65535, 65536}, {0}}}, 4);
  EXPECT_EQ(shard_dtype_for_vocab(65536), "uint16");
  EXPECT_EQ(shard_dtype_for_vocab(65537), "uint32");
}

TEST(TokenShards, PartialReadsAndBounds) {
  auto dir = testing::scratch_dir();
  write_corpus(dir, {{{10, 11, 12, 13, 14}}, {{20, 21}, {30, 31, 32}}}, 32000);
  auto d = TokenDataset::open(dir);
  std::vector<int64_t> out(2);
  d.read(0, 2, 2, out.data());
  EXPECT_EQ(out, (std::vector<int64_t>{12, 13}));
  d.read(2, 1, 2, out.data());
  EXPECT_EQ(out, (std::vector<int64_t>{31, 32}));
  EXPECT_EQ(d.document_length(1), 2);
  EXPECT_THROW(d.read(1, 1, 2, out.data()), Error);
  EXPECT_THROW(d.read(3, 0, 1, out.data()), Error);
  EXPECT_THROW(d.document_length(-1), Error);
}

TEST(TokenShards, UnfinishedWriterLeavesNothing) {
  auto dir = testing::scratch_dir();
  {
    TokenShardWriter w(dir, "shard_0", 32000);
    w.add_document(std::vector<int32_t>{1, 2, 3});
  }
  EXPECT_TRUE(fs::is_empty(dir));
  TokenShardWriter w(dir, "shard_1", 32000);
  EXPECT_THROW(w.add_document(std::vector<int32_t>{1, 32000}), Error);
  EXPECT_THROW(w.add_document(std::vector<int32_t>{-1}), Error);
}

TEST(ShardManifest, RoundTripAndErrorsNameFileAndKey) {
  auto dir = testing::scratch_dir();
  auto m = write_corpus(dir, {{{1, 2, 3}}}, 32000);
  auto r = ShardManifest::read(dir / "manifest.json");
  EXPECT_EQ(r.tokenizer_sha256, m.tokenizer_sha256);
  EXPECT_EQ(r.vocab_size, 32000);
  EXPECT_EQ(r.dtype, "uint16");
  EXPECT_EQ(r.documents, 1);
  EXPECT_EQ(r.tokens, 3);
  ASSERT_EQ(r.sources.size(), 1u);
  EXPECT_EQ(r.sources[0].path, "in.jsonl");
  EXPECT_EQ(r.sources[0].bytes, 123u);
  EXPECT_EQ(r.sources[0].skipped, 2);
  ASSERT_EQ(r.shards.size(), 1u);
  EXPECT_EQ(r.shards[0].name, "shard_0");

  std::string text = read_text_file(dir / "manifest.json");
  text.replace(text.find("\"vocab_size\""), 12, "\"vocab_sise\"");
  write_file_atomic(dir / "manifest.json", text);
  try {
    ShardManifest::read(dir / "manifest.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("manifest.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocab_size"), std::string::npos) << e.what();
  }
}

TEST(TokenShards, TokenizerMismatchRefusedNamingBoth) {
  auto dir = testing::scratch_dir();
  write_corpus(dir, {{{1, 2}}}, 32000);
  const std::string other(64, 'c');
  try {
    TokenDataset::open(dir, other);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(std::string(64, 'a')), std::string::npos) << msg;
    EXPECT_NE(msg.find(other), std::string::npos) << msg;
    EXPECT_NE(msg.find(dir.string()), std::string::npos) << msg;
  }
}

TEST(TokenShards, CorruptShardsRefusedNamingTheFile) {
  auto dir = testing::scratch_dir();
  write_corpus(dir, {{{1, 2, 3}, {4, 5}}}, 32000);
  auto expect_error = [&](const std::string& what) {
    try {
      TokenDataset::open(dir);
      FAIL() << "expected an error mentioning " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  {  // offsets 0, 6, 5: the last still matches the .bin, but they decrease
    std::string idx = read_text_file(dir / "shard_0.idx");
    uint64_t bad = 6;
    std::memcpy(idx.data() + 8, &bad, 8);
    write_file_atomic(dir / "shard_0.idx", idx);
    expect_error("shard_0.idx");
  }
  write_corpus(dir, {{{1, 2, 3}, {4, 5}}}, 32000);
  {
    std::ofstream(dir / "shard_0.bin", std::ios::app) << "xx";
    expect_error("shard_0.bin");
  }
}

// The writer records each shard's largest id, so a trainer can refuse ids its model lacks
// before the first step (issue 14).
TEST(ShardManifest, RecordsEachShardsMaxTokenId) {
  auto dir = testing::scratch_dir();
  write_corpus(dir, {{{1, 2, 3}, {4, 31999}}, {{7, 5}}}, 32000);
  auto r = ShardManifest::read(dir / "manifest.json");
  ASSERT_EQ(r.shards.size(), 2u);
  EXPECT_EQ(r.shards[0].max_token_id, 31999);
  EXPECT_EQ(r.shards[1].max_token_id, 7);
  // Manifests written before the key read as unknown.
  std::string text = read_text_file(dir / "manifest.json");
  auto j = nlohmann::json::parse(text);
  for (auto& e : j["shards"]) e.erase("max_token_id");
  write_file_atomic(dir / "manifest.json", j.dump(1));
  EXPECT_EQ(ShardManifest::read(dir / "manifest.json").shards[0].max_token_id, -1);
}

TEST(TokenShards, RecordedMaxTokenIdPastTheVocabIsRefused) {
  auto dir = testing::scratch_dir();
  write_corpus(dir, {{{1, 2, 3}}}, 32000);
  auto j = nlohmann::json::parse(read_text_file(dir / "manifest.json"));
  j["shards"][0]["max_token_id"] = 32000;
  write_file_atomic(dir / "manifest.json", j.dump(1));
  try {
    TokenDataset::open(dir);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("manifest.json: shards[0] 'shard_0' has max_token_id 32000, outside its "
                                         "vocab_size 32000"),
              std::string::npos)
        << e.what();
  }
}

TEST(TokenShards, LocateNamesTheShardFileAndPosition) {
  auto dir = testing::scratch_dir();
  write_corpus(dir, {{{1, 2, 3}}, {{4, 5}, {6, 7, 8}}}, 32000);
  auto d = TokenDataset::open(dir);
  EXPECT_EQ(d.locate(2, 1), (dir / "shard_1.bin").string() + " token 3 (document 1 of that shard, position 1)");
  auto bad = d.first_id_at_least(1, 7);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(bad->doc, 2);
  EXPECT_EQ(bad->offset, 1);
  EXPECT_EQ(bad->id, 7);
  EXPECT_FALSE(d.first_id_at_least(0, 4).has_value());
}

}  // namespace
}  // namespace agenttune
