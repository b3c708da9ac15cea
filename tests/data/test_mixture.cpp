// The pretraining mixture: shares met in trained tokens, deterministic and resumable from its
// small state, independent of the world size, documents packed with restarting positions.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "agenttune/data/mixture.h"
#include "agenttune/data/token_shards.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "synthetic_corpus.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

using testing::make_synthetic_source;

MixtureOptions two_sources(const fs::path& root, int64_t seq_len = 256) {
  MixtureOptions o;
  o.sources = {{"code", make_synthetic_source(root / "code", 300, 1000, 1), 10.0},
               {"text", make_synthetic_source(root / "text", 60, 100000, 2), 1.0}};
  o.seq_len = seq_len;
  o.seed = 42;
  return o;
}

TEST(Mixture, SharesMeetWeightsInTrainedTokensWithinOnePercentAfter1M) {
  Mixture m(two_sources(testing::scratch_dir(), 1024));
  std::vector<int64_t> trained(2, 0);
  int64_t total = 0;
  while (total < 1'000'000) {
    auto b = m.next_batch(8);
    for (int s = 0; s < 2; ++s) trained[s] += b.source_tokens[s];
    total += b.trained_tokens;
  }
  double code = static_cast<double>(trained[0]) / total;
  EXPECT_NEAR(code, 10.0 / 11.0, 0.01);
  EXPECT_NEAR(m.shares()[0], 10.0 / 11.0, 0.01);
  // The small text source was exhausted many times over: epochs advanced.
  EXPECT_GT(m.state().sources[1].epoch, 2);
}

TEST(Mixture, RestoringTheStateContinuesTheStreamExactly) {
  auto root = testing::scratch_dir();
  auto opts = two_sources(root);
  Mixture a(opts);
  std::vector<PackedBatch> full;
  for (int i = 0; i < 50; ++i) full.push_back(a.next_batch(3));

  Mixture b(opts);
  for (int i = 0; i < 20; ++i) b.next_batch(3);
  auto saved = b.state().to_json().dump();
  Mixture c(opts);
  c.restore(MixtureState::from_json(nlohmann::json::parse(saved), 2));
  for (int i = 20; i < 50; ++i) {
    auto x = c.next_batch(3);
    ASSERT_TRUE(at::equal(x.tokens, full[i].tokens)) << "batch " << i;
    ASSERT_TRUE(at::equal(x.targets, full[i].targets)) << "batch " << i;
    ASSERT_TRUE(at::equal(x.positions, full[i].positions)) << "batch " << i;
  }
}

TEST(Mixture, RanksSplitOneGlobalStreamWhateverTheWorldSize) {
  auto opts = two_sources(testing::scratch_dir());
  Mixture one(opts), r0(opts), r1(opts);
  for (int step = 0; step < 10; ++step) {
    auto g = one.next_batch(4);
    auto a = r0.next_batch(2, 0, 2);
    auto b = r1.next_batch(2, 1, 2);
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(at::equal(a.tokens[i], g.tokens[2 * i]));
      ASSERT_TRUE(at::equal(b.tokens[i], g.tokens[2 * i + 1]));
      ASSERT_TRUE(at::equal(b.targets[i], g.targets[2 * i + 1]));
    }
    EXPECT_EQ(a.trained_tokens + b.trained_tokens, g.trained_tokens);
  }
  EXPECT_EQ(one.state().to_json(), r1.state().to_json());
}

TEST(Mixture, PackingRestartsPositionsAndNeverTrainsAcrossDocuments) {
  Mixture m(two_sources(testing::scratch_dir(), 512));
  for (int step = 0; step < 5; ++step) {
    auto b = m.next_batch(2);
    auto tok = b.tokens.accessor<int64_t, 2>();
    auto tgt = b.targets.accessor<int64_t, 2>();
    auto pos = b.positions.accessor<int64_t, 2>();
    auto doc = b.doc_ids.accessor<int64_t, 2>();
    int64_t counted = 0;
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(pos[r][0], 0);
      for (int t = 0; t < 512; ++t) {
        if (tgt[r][t] != -100) ++counted;
        if (t == 0) continue;
        bool same_doc = doc[r][t] == doc[r][t - 1];
        EXPECT_EQ(pos[r][t], same_doc ? pos[r][t - 1] + 1 : 0);
        // A target is the next token of the same document, or not trained at all.
        if (tgt[r][t - 1] != -100) {
          EXPECT_TRUE(same_doc);
          EXPECT_EQ(tgt[r][t - 1], tok[r][t]);
        } else {
          EXPECT_FALSE(same_doc);
        }
      }
    }
    EXPECT_EQ(counted, b.trained_tokens);
  }
}

TEST(Mixture, HeldOutDocumentsNeverReachTraining) {
  auto opts = two_sources(testing::scratch_dir());
  opts.validation_fraction = 0.1;
  Mixture m(opts);
  std::set<int64_t> val_tokens, train_tokens;
  for (auto& b : m.validation_batches(2, 3)) {
    auto t = b.tokens.flatten();
    auto* p = t.data_ptr<int64_t>();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (p[i] != 2) val_tokens.insert(p[i]);
  }
  ASSERT_FALSE(val_tokens.empty());
  for (int i = 0; i < 200; ++i) {
    auto t = m.next_batch(4).tokens.flatten();
    auto* p = t.data_ptr<int64_t>();
    for (int64_t k = 0; k < t.numel(); ++k) train_tokens.insert(p[k]);
  }
  for (auto v : val_tokens) EXPECT_EQ(train_tokens.count(v), 0u) << "held-out document " << v << " was trained on";
  // Two passes over the held-out set are the same (a fresh, fixed evaluation each time).
  EXPECT_TRUE(at::equal(m.validation_batches(2, 1)[0].tokens, m.validation_batches(2, 1)[0].tokens));
}

TEST(Mixture, BadSourcesAreRefusedWithTheirName) {
  auto root = testing::scratch_dir();
  MixtureOptions o;
  o.sources = {{"code", root / "does_not_exist", 1.0}};
  try {
    Mixture m(o);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("does_not_exist"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace agenttune

namespace agenttune {
namespace {

TEST(Mixture, SftMasksDecideWhichTargetsTrain) {
  // Document d: tokens 100+i, mask 1 on every third token (a stand-in for assistant spans).
  auto dir = testing::scratch_dir() / "sft";
  std::filesystem::create_directories(dir);
  TokenShardWriter w(dir, "shard_00000", 32000);
  for (int d = 0; d < 20; ++d) {
    std::vector<int32_t> t(50 + d);
    std::vector<uint8_t> m(t.size());
    for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>(100 + i), m[i] = i % 3 == 0;
    w.add_document(t, m);
  }
  auto e = w.finish();
  ShardManifest man;
  man.vocab_size = 32000, man.dtype = shard_dtype_for_vocab(32000), man.documents = e.documents, man.tokens = e.tokens;
  man.has_mask = true, man.trained_tokens = e.trained_tokens, man.shards = {e};
  man.write(dir / "manifest.json");

  MixtureOptions o;
  o.sources = {{"sft", dir, 1.0}};
  o.seq_len = 64;
  Mixture m(o);
  for (int step = 0; step < 10; ++step) {
    auto b = m.next_batch(2);
    auto tok = b.tokens.accessor<int64_t, 2>();
    auto tgt = b.targets.accessor<int64_t, 2>();
    auto doc = b.doc_ids.accessor<int64_t, 2>();
    int64_t trained = 0;
    for (int r = 0; r < 2; ++r)
      for (int t = 0; t + 1 < 64; ++t) {
        bool same_doc = doc[r][t] == doc[r][t + 1];
        bool next_is_trained = same_doc && (tok[r][t + 1] - 100) % 3 == 0;
        EXPECT_EQ(tgt[r][t] != -100, next_is_trained) << "row " << r << " pos " << t;
        if (tgt[r][t] != -100) {
          EXPECT_EQ(tgt[r][t], tok[r][t + 1]);
          ++trained;
        }
      }
    for (int r = 0; r < 2; ++r) trained += tgt[r][63] != -100;
    EXPECT_EQ(trained, b.trained_tokens);
  }
}

}  // namespace
}  // namespace agenttune

namespace agenttune {
namespace {

MixtureOptions padded(const std::filesystem::path& root, int64_t seq_len) {
  MixtureOptions o;
  // 40 documents of 20..400 copies of token 1000+d: a row's tokens say which document it holds.
  o.sources = {{"chat", testing::make_synthetic_source(root / "chat", 40, 1000, 3), 1.0}};
  o.seq_len = seq_len;
  o.packing = Packing::Pad;
  return o;
}

TEST(Mixture, PaddingHoldsOneDocumentPerRowAndCutsTheBatchToItsLongestRow) {
  Mixture m(padded(testing::scratch_dir(), 512));
  std::multiset<int64_t> seen;
  int64_t narrower = 0;
  for (int step = 0; step < 10; ++step) {  // 40 rows: exactly one epoch
    auto b = m.next_batch(4);
    const int64_t width = b.tokens.size(1);
    auto tok = b.tokens.accessor<int64_t, 2>();
    auto tgt = b.targets.accessor<int64_t, 2>();
    auto pos = b.positions.accessor<int64_t, 2>();
    int64_t longest = 0, real = 0, trained = 0;
    for (int r = 0; r < 4; ++r) {
      const int64_t doc = tok[r][0];
      seen.insert(doc);
      int64_t len = 0;
      while (len < width && tok[r][len] == doc) ++len;
      // The document ends in EOS (2); the rest of the row is padding (0), never trained.
      if (len < width && tok[r][len] == 2) ++len;
      for (int64_t t = 0; t < len; ++t) EXPECT_EQ(pos[r][t], t);
      for (int64_t t = len; t < width; ++t) {
        EXPECT_EQ(tok[r][t], 0) << "row " << r << " pos " << t;
        EXPECT_EQ(tgt[r][t], -100);
      }
      for (int64_t t = 0; t + 1 < len; ++t) EXPECT_EQ(tgt[r][t], tok[r][t + 1]);
      EXPECT_EQ(tgt[r][len - 1], -100) << "the last token has no target";
      for (int64_t t = 0; t < width; ++t) trained += tgt[r][t] != -100;
      longest = std::max(longest, len);
      real += len;
    }
    EXPECT_EQ(width, std::min<int64_t>(512, (longest + 7) / 8 * 8));
    EXPECT_EQ(b.real_tokens, real);
    EXPECT_EQ(b.trained_tokens, trained);
    narrower += width < 512;
  }
  EXPECT_EQ(seen.size(), 40u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 40u) << "each document once per epoch";
  EXPECT_GT(narrower, 0) << "no batch was cut: the test data has no short batch";
}

TEST(Mixture, PaddingContinuesALongDocumentAloneInTheNextRow) {
  Mixture m(padded(testing::scratch_dir(), 64));
  int64_t continued = 0, prev_doc = -1;
  for (int step = 0; step < 30; ++step) {
    auto b = m.next_batch(1);
    auto tok = b.tokens.accessor<int64_t, 2>();
    auto pos = b.positions.accessor<int64_t, 2>();
    const int64_t doc = tok[0][0];
    if (doc == 2) continue;  // a lone EOS left over from the previous row's document
    for (int64_t t = 0; t < b.tokens.size(1); ++t)
      EXPECT_TRUE(tok[0][t] == doc || tok[0][t] == 2 || tok[0][t] == 0) << "two documents in one padded row";
    EXPECT_EQ(pos[0][0], 0);
    continued += doc == prev_doc;
    prev_doc = doc;
  }
  EXPECT_GT(continued, 0) << "no document was long enough to continue";
}

// Token ids past the vocabulary never reach the model (issue 14): a recorded max_token_id at or
// above the model's vocabulary fails when the vocabulary is set, naming the shard file and the
// first such id; a shard damaged after prepare (its recorded max says nothing) fails on the host
// when the document comes up, naming the file and the position.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Mixture, ModelVocabBelowARecordedMaxTokenIdIsAnErrorNamingTheShard) {
  auto root = testing::scratch_dir();
  MixtureOptions o;
  // Document d holds token 1000+d: ids 1000..1039, recorded max 1039.
  o.sources = {{"code", make_synthetic_source(root / "code", 40, 1000, 1, 20, 40, 4096), 1.0}};
  o.seq_len = 64;
  Mixture m(o);
  m.set_model_vocab(1040);  // every id fits
  const std::string msg = error_of([&] { m.set_model_vocab(1020); });
  EXPECT_NE(msg.find((root / "code/shard_00000.bin").string() + " token "), std::string::npos) << msg;
  EXPECT_NE(msg.find("(document 20 of that shard, position 0): token id 1020 is outside the vocabulary of 1020 "
                     "tokens (data.sources[0] 'code', shard max_token_id 1039)"),
            std::string::npos)
      << msg;
}

TEST(Mixture, AnIdPastTheVocabInADamagedShardIsCaughtOnTheHost) {
  auto root = testing::scratch_dir();
  MixtureOptions o;
  o.sources = {{"code", make_synthetic_source(root / "code", 30, 1000, 1, 20, 40, 4096), 1.0}};
  o.seq_len = 64;
  // Token 5 of document 0 becomes 5000 (uint16 shard; vocab 4096): the manifest still says 1029.
  const fs::path bin = root / "code/shard_00000.bin";
  std::string bytes = read_text_file(bin);
  const uint16_t bad = 5000;
  std::memcpy(bytes.data() + 5 * sizeof(uint16_t), &bad, sizeof bad);
  write_file_atomic(bin, bytes);
  Mixture m(o);
  m.set_model_vocab(4096);  // the recorded maximum passes: only reading finds it
  const std::string msg = error_of([&] {
    for (int i = 0; i < 100; ++i) m.next_batch(2);
  });
  EXPECT_NE(msg.find(bin.string() + " token 5 (document 0 of that shard, position 5): token id 5000 is outside the "
                                    "vocabulary of 4096 tokens (data.sources[0] 'code')"),
            std::string::npos)
      << msg;
}

TEST(Mixture, TokenizerMismatchNamesTheTokenizerFile) {
  auto root = testing::scratch_dir();
  MixtureOptions o;
  o.sources = {{"code", make_synthetic_source(root / "code", 10, 1000, 1, 20, 40, 4096), 1.0}};
  o.tokenizer_sha256 = std::string(64, 'c');
  o.tokenizer = root / "other.model";
  const std::string msg = error_of([&] { Mixture m(o); });
  EXPECT_NE(msg.find((root / "code/manifest.json").string() + ": data.sources[0] 'code' was prepared with"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("but data.tokenizer " + (root / "other.model").string() + " has sha256 " + o.tokenizer_sha256),
            std::string::npos)
      << msg;
}

}  // namespace
}  // namespace agenttune

namespace agenttune {
namespace {

// Conversation d (tokens d*1000 + i, so every token names its conversation and place): a prompt of
// 6 + d % 5 untrained tokens, then turns of an answer (4 + d % 3 trained tokens) and a user turn
// (3 + d % 4 untrained), 1 + d % 12 times.
struct Conversation {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  int64_t prompt = 0;
};

Conversation conversation(int d) {
  Conversation c;
  auto add = [&](int n, uint8_t trained) {
    for (int k = 0; k < n; ++k) {
      c.ids.push_back(d * 1000 + static_cast<int32_t>(c.ids.size()));
      c.mask.push_back(trained);
    }
  };
  add(6 + d % 5, 0);
  c.prompt = static_cast<int64_t>(c.ids.size());
  for (int turn = 0; turn < 1 + d % 12; ++turn) add(4 + d % 3, 1), add(3 + d % 4, 0);
  return c;
}

fs::path conversations_source(const fs::path& dir, int n) {
  fs::create_directories(dir);
  TokenShardWriter w(dir, "shard_00000", 1 << 20);
  for (int d = 0; d < n; ++d) {
    auto c = conversation(d);
    w.add_document(c.ids, c.mask);
  }
  auto e = w.finish();
  ShardManifest man;
  man.vocab_size = 1 << 20, man.dtype = shard_dtype_for_vocab(1 << 20), man.documents = e.documents;
  man.tokens = e.tokens, man.has_mask = true, man.trained_tokens = e.trained_tokens, man.shards = {e};
  man.write(dir / "manifest.json");
  return dir;
}

// Every row segment that trains a token opens with its conversation's prompt (positions from 0),
// and holds whole answers only; returns the trained targets seen.
int64_t check_rows(const PackedBatch& b, int64_t seq_len) {
  const int64_t B = b.tokens.size(0), W = b.tokens.size(1);
  auto tok = b.tokens.accessor<int64_t, 2>();
  auto tgt = b.targets.accessor<int64_t, 2>();
  auto pos = b.positions.accessor<int64_t, 2>();
  auto doc = b.doc_ids.accessor<int64_t, 2>();
  int64_t trained = 0;
  for (int64_t r = 0; r < B; ++r)
    for (int64_t start = 0, end = 0; start < W; start = end) {
      while (end < W && doc[r][end] == doc[r][start]) ++end;
      int64_t seg_trained = 0;
      for (int64_t k = start; k < end; ++k) seg_trained += tgt[r][k] != -100;
      trained += seg_trained;
      if (seg_trained == 0) continue;
      const auto c = conversation(static_cast<int>(tok[r][start] / 1000));
      EXPECT_LE(c.prompt, end - start);
      for (int64_t k = 0; k < std::min(c.prompt, end - start); ++k) {
        EXPECT_EQ(tok[r][start + k], c.ids[k]) << "row " << r << " segment at " << start << ": prompt token " << k;
        EXPECT_EQ(pos[r][start + k], k);
      }
      // Whole answers: a trained target's answer starts and ends inside the segment.
      for (int64_t k = start; k < end; ++k) {
        if (tgt[r][k] == -100) continue;
        const int64_t i = tgt[r][k] % 1000;
        if (c.mask[i - 1] == 1)
          EXPECT_TRUE(k > start && tgt[r][k - 1] != -100) << "row " << r << " pos " << k << ": answer without its start";
        if (i + 1 < static_cast<int64_t>(c.mask.size()) && c.mask[i + 1] == 1)
          EXPECT_TRUE(k + 1 < end && tgt[r][k + 1] != -100) << "row " << r << " pos " << k << ": answer cut";
      }
    }
  EXPECT_LE(W, seq_len);
  return trained;
}

TEST(Mixture, ConversationsAreNeverSplitAndLongOnesKeepTheirBeginning) {
  const auto dir = conversations_source(testing::scratch_dir() / "conv", 60);
  for (auto packing : {Packing::Pack, Packing::Pad})
    for (auto policy : {Overlength::Truncate, Overlength::Drop, Overlength::Window}) {
      SCOPED_TRACE(std::string(enum_name(packing)) + " " + enum_name(policy));
      MixtureOptions o;
      o.sources = {{"conv", dir, 1.0}};
      o.seq_len = 48;
      o.packing = packing;
      o.overlength = policy;
      Mixture m(o);
      const auto& counts = m.overlength(0);
      // Lengths run from 13 to 10 + 12 * 12 tokens: many are over 48.
      EXPECT_EQ(counts.conversations, 60);
      EXPECT_GT(counts.over, 10);
      // The synthetic answers are short, so window keeps every one of them.
      if (policy == Overlength::Window) EXPECT_EQ(counts.trained_lost, 0);
      else EXPECT_GT(counts.trained_lost, 0);
      if (policy == Overlength::Drop) EXPECT_EQ(counts.dropped, counts.over);
      if (policy == Overlength::Window) EXPECT_GT(counts.extra_pieces, 0);
      // One pass over the kept pieces, one per row when padded: every trained token the counts
      // promise is seen, and no other.
      const int64_t pieces = counts.conversations - counts.dropped + counts.extra_pieces;
      if (packing == Packing::Pad) EXPECT_EQ(m.rows_per_pass(), static_cast<double>(pieces));
      int64_t trained = 0;
      for (int64_t row = 0; row < (packing == Packing::Pad ? pieces : 30); ++row)
        trained += check_rows(m.next_batch(1), o.seq_len);
      if (packing == Packing::Pad) {
        EXPECT_EQ(trained, counts.trained - counts.trained_lost);
        EXPECT_EQ(m.epochs_done(0), 0);
        EXPECT_EQ(m.state().carry_doc, -1);
      }
    }
}

TEST(Mixture, WindowedConversationResumesMidConversation) {
  const auto dir = conversations_source(testing::scratch_dir() / "conv", 30);
  MixtureOptions o;
  o.sources = {{"conv", dir, 1.0}};
  o.seq_len = 40;
  o.overlength = Overlength::Window;
  Mixture a(o), b(o);
  for (int i = 0; i < 7; ++i) a.next_batch(2);
  b.restore(MixtureState::from_json(a.state().to_json(), 1));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(at::equal(a.next_batch(2).tokens, b.next_batch(2).tokens));
}

}  // namespace
}  // namespace agenttune
