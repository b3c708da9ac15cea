// Loss masks in token shards: NAME.mask round trips, documents without a mask count as trained,
// a corpus without masks reads as all ones, and a mask that disagrees with its shard is refused.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "agenttune/data/token_shards.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;
using Mask = std::vector<uint8_t>;

ShardManifest finish_corpus(const fs::path& dir, std::vector<ShardEntry> entries, int64_t vocab) {
  ShardManifest m;
  m.tokenizer_sha256 = std::string(64, 'a');
  m.vocab_size = vocab;
  m.dtype = shard_dtype_for_vocab(vocab);
  for (auto& e : entries) {
    m.documents += e.documents;
    m.tokens += e.tokens;
    m.trained_tokens += e.trained_tokens;
    m.has_mask = m.has_mask || e.has_mask;
    m.shards.push_back(e);
  }
  m.write(dir / "manifest.json");
  return m;
}

Mask mask_of(const TokenDataset& d, int64_t doc, int64_t begin = 0, int64_t count = -1) {
  if (count < 0) count = d.document_length(doc) - begin;
  Mask m(count, 7);
  d.read_mask(doc, begin, count, m.data());
  return m;
}

TEST(ShardMask, RoundTripAcrossShardsAndDtypes) {
  for (int64_t vocab : {32005, 100000}) {
    auto dir = testing::scratch_dir() / std::to_string(vocab);
    fs::create_directories(dir);
    TokenShardWriter a(dir, "shard_00000", vocab);
    a.add_document(Ids{1, 5, 6, 2}, Mask{0, 0, 1, 1});
    a.add_document(Ids{1, 7}, Mask{0, 1});
    TokenShardWriter b(dir, "shard_00001", vocab);
    b.add_document(Ids{1, 32004, 9, 2, 3}, Mask{0, 0, 1, 1, 0});
    ShardEntry ea = a.finish(), eb = b.finish();
    EXPECT_TRUE(ea.has_mask);
    EXPECT_EQ(ea.trained_tokens, 3);
    EXPECT_EQ(eb.trained_tokens, 2);
    EXPECT_EQ(fs::file_size(dir / "shard_00000.mask"), 6u);
    finish_corpus(dir, {ea, eb}, vocab);

    auto d = TokenDataset::open(dir);
    EXPECT_TRUE(d.has_mask());
    EXPECT_EQ(d.manifest().trained_tokens, 5);
    EXPECT_EQ(mask_of(d, 0), (Mask{0, 0, 1, 1}));
    EXPECT_EQ(mask_of(d, 1), (Mask{0, 1}));
    EXPECT_EQ(mask_of(d, 2), (Mask{0, 0, 1, 1, 0}));
    EXPECT_EQ(mask_of(d, 2, 2, 2), (Mask{1, 1}));
    EXPECT_EQ(mask_of(d, 0, 4, 0), Mask{});
    EXPECT_THROW(mask_of(d, 0, 3, 2), Error);
    EXPECT_THROW(mask_of(d, 3), Error);
    std::vector<int64_t> ids(5);
    d.read(2, 0, 5, ids.data());
    EXPECT_EQ(ids, (std::vector<int64_t>{1, 32004, 9, 2, 3}));
  }
}

TEST(ShardMask, UnmaskedDocumentsBeforeAndAfterAMaskedOneAreTrained) {
  auto dir = testing::scratch_dir();
  TokenShardWriter w(dir, "s", 32000);
  w.add_document(Ids{1, 2, 3});
  w.add_document(Ids{4, 5}, Mask{1, 0});
  w.add_document(Ids{6});
  ShardEntry e = w.finish();
  EXPECT_EQ(e.trained_tokens, 5);
  finish_corpus(dir, {e}, 32000);
  auto d = TokenDataset::open(dir);
  EXPECT_EQ(mask_of(d, 0), (Mask{1, 1, 1}));
  EXPECT_EQ(mask_of(d, 1), (Mask{1, 0}));
  EXPECT_EQ(mask_of(d, 2), (Mask{1}));
}

TEST(ShardMask, CorpusWithoutMasksReadsAllOnesAndKeepsItsManifestShape) {
  auto dir = testing::scratch_dir();
  TokenShardWriter w(dir, "s", 32000);
  w.add_document(Ids{1, 2, 3});
  ShardEntry e = w.finish();
  EXPECT_FALSE(e.has_mask);
  EXPECT_FALSE(fs::exists(dir / "s.mask"));
  finish_corpus(dir, {e}, 32000);
  auto j = nlohmann::json::parse(read_text_file(dir / "manifest.json"));
  EXPECT_FALSE(j.contains("has_mask"));
  EXPECT_FALSE(j.contains("trained_tokens"));
  EXPECT_FALSE(j.contains("added_tokens"));
  auto d = TokenDataset::open(dir);
  EXPECT_FALSE(d.has_mask());
  EXPECT_EQ(d.manifest().trained_tokens, 3);
  EXPECT_EQ(mask_of(d, 0), (Mask{1, 1, 1}));
}

TEST(ShardMask, ManifestKeepsAddedTokens) {
  auto dir = testing::scratch_dir();
  TokenShardWriter w(dir, "s", 32005);
  w.add_document(Ids{1, 32001}, Mask{0, 1});
  ShardManifest m = finish_corpus(dir, {w.finish()}, 32005);
  m.added_tokens = {"<pad>", "<|im_start|>"};
  m.write(dir / "manifest.json");
  auto back = ShardManifest::read(dir / "manifest.json");
  EXPECT_EQ(back.added_tokens, m.added_tokens);
  EXPECT_TRUE(back.has_mask);
  EXPECT_EQ(back.trained_tokens, 1);
  EXPECT_EQ(back.shards.at(0).trained_tokens, 1);
}

TEST(ShardMask, WriterRejectsMalformedMasks) {
  auto dir = testing::scratch_dir();
  TokenShardWriter w(dir, "s", 32000);
  EXPECT_THROW(w.add_document(Ids{1, 2, 3}, Mask{0, 1}), Error);
  EXPECT_THROW(w.add_document(Ids{1, 2}, Mask{0, 2}), Error);
}

TEST(ShardMask, OpenRefusesAMaskOfTheWrongSizeOrAMissingOne) {
  auto dir = testing::scratch_dir();
  TokenShardWriter w(dir, "s", 32000);
  w.add_document(Ids{1, 2, 3}, Mask{0, 1, 1});
  finish_corpus(dir, {w.finish()}, 32000);
  fs::resize_file(dir / "s.mask", 2);
  try {
    TokenDataset::open(dir);
    FAIL() << "a short .mask was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("s.mask"), std::string::npos) << e.what();
  }
  fs::remove(dir / "s.mask");
  EXPECT_THROW(TokenDataset::open(dir), Error);
}

TEST(ShardMask, AbandonedWriterLeavesNoMaskBehind) {
  auto dir = testing::scratch_dir();
  {
    TokenShardWriter w(dir, "s", 32000);
    w.add_document(Ids{1, 2}, Mask{0, 1});
  }
  EXPECT_TRUE(fs::is_empty(dir));
}

}  // namespace
}  // namespace agenttune
