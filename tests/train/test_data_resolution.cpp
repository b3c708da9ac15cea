// Resolving the data section: weights stated in samples or as an agent share reach the mixture as trained-token
// weights that realise the stated share, and epochs become a step count.
#include <gtest/gtest.h>

#include "agenttune/data/mixture.h"
#include "agenttune/train/data_resolution.h"
#include "agenttune/util/error.h"
#include "synthetic_corpus.h"
#include "test_paths.h"

namespace agenttune {
namespace {

// Two sources whose documents differ in length 4x, so samples and tokens disagree strongly.
TrainConfig two_sources() {
  auto root = testing::scratch_dir();
  TrainConfig c;
  c.output_dir = root / "run";
  c.data.sources = {{"agent", testing::make_synthetic_source(root / "agent", 50, 1000, 1, 200, 400), 1.0, true},
                    {"chat", testing::make_synthetic_source(root / "chat", 200, 5000, 2, 50, 100), 1.0, false}};
  c.data.seq_len = 256;
  c.train.global_batch_sequences = 8;
  return c;
}

// Documents drawn per source after `windows` windows, from the mixture's cursors.
std::vector<double> sample_shares(const TrainConfig& c, int64_t windows) {
  Mixture m(mixture_options(c));
  for (int64_t i = 0; i < windows; ++i) m.next_batch(1);
  std::vector<double> drawn;
  double total = 0;
  for (size_t s = 0; s < c.data.sources.size(); ++s) {
    auto docs = TokenDataset::open(c.data.sources[s].path).num_documents();
    const auto& cur = m.state().sources[s];
    drawn.push_back(static_cast<double>(cur.epoch * docs + cur.position));
    total += drawn.back();
  }
  for (double& d : drawn) d /= total;
  return drawn;
}

TEST(DataPlan, AgentShareInSamplesIsRealisedInSamples) {
  auto c = two_sources();
  c.data.agent_share = 0.2;
  c.data.weight_unit = ShareUnit::Samples;
  auto r = resolve_data_config(c);
  EXPECT_FALSE(r.data.agent_share.has_value());
  EXPECT_EQ(r.data.weight_unit, ShareUnit::TrainedTokens);
  auto shares = sample_shares(r, 4000);
  EXPECT_NEAR(shares[0], 0.2, 0.01);
  // The same share in trained tokens is a different mixture: agent samples are ~4x longer.
  c.data.weight_unit = ShareUnit::TrainedTokens;
  EXPECT_LT(sample_shares(resolve_data_config(c), 4000)[0], 0.1);
}

TEST(DataPlan, WeightsInSamplesScaleByTrainedTokensPerSample) {
  auto c = two_sources();
  c.data.weight_unit = ShareUnit::Samples;
  c.data.sources[0].weight = 1, c.data.sources[1].weight = 3;
  auto shares = sample_shares(resolve_data_config(c), 4000);
  EXPECT_NEAR(shares[0], 0.25, 0.01);
}

TEST(DataPlan, EpochsBecomeStepsOverAllTokens) {
  auto c = two_sources();
  c.train.epochs = 2;
  int64_t tokens = 0, rows = 0;
  for (const auto& s : c.data.sources) {
    auto d = TokenDataset::open(s.path);
    tokens += d.num_tokens();
    for (int64_t k = 0; k < d.num_documents(); ++k) rows += (d.document_length(k) + 255) / 256;
  }
  EXPECT_EQ(resolve_data_config(c).train.max_steps, (2 * tokens + 8 * 256 - 1) / (8 * 256));
  c.data.packing = Packing::Pad;  // a row per 256 tokens of each document
  EXPECT_EQ(resolve_data_config(c).train.max_steps, (2 * rows + 7) / 8);
}

TEST(DataPlan, ConflictsAndMissingFoldersAreNamed) {
  auto c = two_sources();
  c.data.agent_share = 0.2;
  c.data.sources[1].weight = 4;
  EXPECT_THROW(c.validate("cfg"), Error);
  c.data.sources[1].weight = 1;
  c.data.sources[1].path = c.output_dir.parent_path() / "missing";
  try {
    resolve_data_config(c);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chat"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace agenttune
