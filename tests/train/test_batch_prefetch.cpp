// The trainer's batch read-ahead against plain sequential reads of the mixture: the same batches
// in the same order, and a checkpoint taken between steps, while the next step's batches have
// already been read on the thread, resumes exactly at those batches (nothing skipped, nothing
// read twice).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agenttune/train/batch_prefetch.h"
#include "synthetic_corpus.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 6;
const StepBatchShape kShape{2, 3, 1, 2};  // 2 micro-batches of 3 sequences, rank 1 of 2

MixtureOptions options(const fs::path& dir) {
  MixtureOptions o;
  o.sources = {{"a", testing::make_synthetic_source(dir / "a", 40, 10, 3), 3.0},
               {"b", testing::make_synthetic_source(dir / "b", 30, 1000, 4), 1.0}};
  o.seq_len = 64;
  o.seed = 7;
  return o;
}

std::vector<PackedBatch> read_step(Mixture& m) {
  std::vector<PackedBatch> out;
  for (int64_t i = 0; i < kShape.micro_batches; ++i)
    out.push_back(m.next_batch(kShape.micro_batch_size, kShape.rank, kShape.world));
  return out;
}

void expect_same(const std::vector<PackedBatch>& got, const std::vector<PackedBatch>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(at::equal(got[i].tokens, want[i].tokens)) << what << ", micro-batch " << i;
    EXPECT_TRUE(at::equal(got[i].targets, want[i].targets)) << what << ", micro-batch " << i;
    EXPECT_TRUE(at::equal(got[i].positions, want[i].positions)) << what << ", micro-batch " << i;
    EXPECT_TRUE(at::equal(got[i].doc_ids, want[i].doc_ids)) << what << ", micro-batch " << i;
    EXPECT_EQ(got[i].trained_tokens, want[i].trained_tokens) << what;
    EXPECT_EQ(got[i].source_tokens, want[i].source_tokens) << what;
  }
}

struct Reference {
  std::vector<std::vector<PackedBatch>> steps;
  std::vector<MixtureState> after;  // the stream after each step's batches
};

Reference sequential(const MixtureOptions& o) {
  Reference r;
  Mixture m(o);
  for (int k = 0; k < kSteps; ++k) {
    r.steps.push_back(read_step(m));
    r.after.push_back(m.state());
  }
  return r;
}

TEST(BatchPrefetch, SameBatchesAndACheckpointBetweenStepsResumesAtTheBatchesReadAhead) {
  const MixtureOptions o = options(testing::scratch_dir());
  const Reference ref = sequential(o);
  Mixture data(o);
  BatchPrefetch prefetch(data, kShape, c10::Device(c10::kCPU));
  for (int k = 0; k < kSteps; ++k) {
    const bool ahead = k + 1 < kSteps;
    expect_same(prefetch.next(ahead), ref.steps[k], "step " + std::to_string(k));
    prefetch.settle();
    // A checkpoint now records this state, although step k+1's batches are already read.
    const MixtureState saved = data.state();
    EXPECT_EQ(saved.to_json(), ref.after[k].to_json()) << "step " << k;
    if (!ahead) break;
    Mixture resumed(o);
    resumed.restore(MixtureState::from_json(saved.to_json(), o.sources.size()));
    BatchPrefetch again(resumed, kShape, c10::Device(c10::kCPU));
    expect_same(again.next(false), ref.steps[k + 1], "resumed after step " + std::to_string(k));
  }
}

TEST(BatchPrefetch, AStreamMovedBetweenStepsIsReadAfresh) {
  const MixtureOptions o = options(testing::scratch_dir());
  const Reference ref = sequential(o);
  Mixture data(o);
  BatchPrefetch prefetch(data, kShape, c10::Device(c10::kCPU));
  expect_same(prefetch.next(true), ref.steps[0], "step 0");
  expect_same(prefetch.next(true), ref.steps[1], "step 1 without a settle between");
  prefetch.settle();
  // As a rollback that rewinds the stream would: step 2's read-ahead no longer applies.
  data.restore(ref.after[0]);
  expect_same(prefetch.next(true), ref.steps[1], "step 1 again");
  expect_same(prefetch.next(false), ref.steps[2], "step 2");
  EXPECT_EQ(data.state().to_json(), ref.after[2].to_json());
}

}  // namespace
}  // namespace agenttune
