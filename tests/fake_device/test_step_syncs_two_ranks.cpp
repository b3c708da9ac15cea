// One host sync per optimizer step at world size 2, as at world size 1: the step's token counts
// are summed over the ranks on the device, every micro-batch's loss is scaled there, and the
// counts come back with the loss, grad norm and stop vote in the step's one fetch. Ranks run as
// threads, each on its own fake device, over Gloo. Gloo stages a fake device's tensors through
// host memory, which NCCL on a GPU does not do; those staging copies are not counted (see
// ProcessGroup::for_backend), so what is counted is what a GPU run would sync.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <mutex>

#include "agenttune/model/loss.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/step.h"
#include "fake_device.h"
#include "thread_ranks.h"
#include "tiny_llama.h"

namespace fd = agenttune::testing::fake_device;
using namespace agenttune;
using namespace agenttune::parallel;

namespace {

constexpr int64_t kSeq = 32, kRows = 2, kSteps = 4;

// Ranks differ in how many targets they hide, so the step's token count is not any one rank's.
PackedBatch batch(at::Generator& g, int64_t vocab, double hidden) {
  PackedBatch b;
  b.tokens = at::randint(3, vocab, {kRows, kSeq}, g, at::kLong);
  b.positions = at::arange(kSeq, at::kLong).expand({kRows, kSeq}).contiguous();
  b.doc_ids = at::zeros({kRows, kSeq}, at::kLong);
  b.targets = labels_to_targets(b.tokens);
  b.targets.masked_fill_(at::rand({kRows, kSeq}, g) < hidden, kIgnoreIndex);
  b.trained_tokens = (b.targets != kIgnoreIndex).sum().item<int64_t>();
  b.real_tokens = kRows * kSeq;
  return b;
}

struct RankFigures {
  double syncs_per_step = 0;
  double loss = 0;
  int64_t trained = 0, local_trained = 0;
};

std::vector<RankFigures> run_two_ranks(ShardStrategy strategy) {
  std::vector<RankFigures> out(2);
  fd::reset_all();
  agenttune::testing::run_ranks(
      2,
      [&](ProcessGroup& d, const WorldInfo& w) {
        const auto cfg = agenttune::testing::tiny_llama(128, 64, 96, 2, 4, 2, 64);
        ShardOptions o;
        o.strategy = strategy;
        o.compute_dtype = at::kBFloat16;
        ShardedModel sm(make_llama(cfg, 5), d, w, o);
        AdamW opt(sm.shard_params(), {}, sm.shard_decay());
        auto g = at::make_generator<at::CPUGeneratorImpl>(21 + d.rank());
        const std::vector<PackedBatch> batches = {batch(g, cfg.vocab_size, 0.2 + 0.2 * d.rank()),
                                                  batch(g, cfg.vocab_size, 0.1)};
        StepRequest req;
        req.lr = 1e-3;
        req.attention = AttentionMode::Document;
        (void)train_step(sm, opt, batches, req, d);  // warm-up: lazy buffers, first gathers
        const int64_t before = fd::counters(d.rank()).host_syncs;
        StepOutcome last;
        for (int64_t s = 0; s < kSteps; ++s) last = train_step(sm, opt, batches, req, d);
        RankFigures& f = out[d.rank()];
        f.syncs_per_step = static_cast<double>(fd::counters(d.rank()).host_syncs - before) / kSteps;
        f.loss = last.loss;
        f.trained = last.trained;
        f.local_trained = batches[0].trained_tokens + batches[1].trained_tokens;
        EXPECT_TRUE(last.judgement.applied()) << last.judgement.reason;
      },
      std::chrono::seconds(60), [](int r) { return fd::device(r); });
  return out;
}

TEST(StepOnFakeDevice, OneHostSyncPerStepAtTwoRanks) {
  for (ShardStrategy strategy : {ShardStrategy::FullShard, ShardStrategy::NoShard}) {
    const auto f = run_two_ranks(strategy);
    std::printf("[ figures  ] %s at 2 ranks: host syncs per optimizer step %.2f (rank 0), %.2f (rank 1)\n",
                std::string(enum_name(strategy)).c_str(), f[0].syncs_per_step, f[1].syncs_per_step);
    for (int r = 0; r < 2; ++r) EXPECT_EQ(f[r].syncs_per_step, 1.0) << enum_name(strategy) << ", rank " << r;
    // The counts that came back with the fetch are the step's, summed over both ranks.
    EXPECT_NE(f[0].local_trained, f[1].local_trained);
    for (int r = 0; r < 2; ++r) EXPECT_EQ(f[r].trained, f[0].local_trained + f[1].local_trained) << "rank " << r;
    EXPECT_EQ(f[0].loss, f[1].loss);
  }
}

}  // namespace
