// Initial weights read as slices (issue 11): each rank reads only the elements of its own shards,
// and a model that was never filled (as the trainer builds for a checkpoint) sharded from slices
// is bit-identical to one built from a whole loaded model.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "agenttune/parallel/sharded_model.h"
#include "tiny_llama.h"
#include "thread_ranks.h"

using namespace agenttune;
using namespace agenttune::parallel;

namespace {

LlamaConfig tiny() { return agenttune::testing::tiny_llama(); }

TEST(ShardSlices, EachRankReadsOnlyItsOwnElementsAndGetsTheSameShards) {
  const auto reference = make_llama(tiny(), 9);
  std::map<std::string, at::Tensor> weights;
  int64_t total = 0;
  for (const auto& p : reference->named_parameters()) {
    weights[p.key()] = p.value().detach();
    total += p.value().numel();
  }
  std::mutex mu;
  std::vector<int64_t> read(3, 0);
  for (int world : {1, 3}) {
    std::fill(read.begin(), read.end(), 0);
    agenttune::testing::run_ranks(world, [&](ProcessGroup& d, const WorldInfo& w) {
      int64_t mine = 0;
      WeightSlices slices = [&](const FlatParam& p, int64_t offset, int64_t numel) {
        EXPECT_EQ(weights.at(p.name).sizes().vec(), p.shape) << p.name;
        mine += numel;
        return weights.at(p.name).reshape({-1}).narrow(0, offset, numel).clone();
      };
      ShardOptions o;
      ShardedModel from_slices(LlamaForCausalLM(tiny()), d, w, o, slices);  // never filled
      ShardedModel from_model(make_llama(tiny(), 9), d, w, o);
      auto got = from_slices.shard_params(), want = from_model.shard_params();
      ASSERT_EQ(got.size(), want.size());
      for (size_t g = 0; g < got.size(); ++g)
        EXPECT_TRUE(at::equal(got[g].second, want[g].second)) << got[g].first << " rank " << d.rank();
      std::lock_guard<std::mutex> lock(mu);
      read[static_cast<size_t>(d.rank())] = mine;
    });
    int64_t sum = 0;
    for (int r = 0; r < world; ++r) {
      sum += read[static_cast<size_t>(r)];
      // A rank's shard is 1/world of each (padded) group: never the whole model.
      if (world > 1) EXPECT_LE(read[static_cast<size_t>(r)], total / world + 64) << "rank " << r;
    }
    EXPECT_EQ(sum, total) << "world " << world << ": every element read exactly once";
  }
}

}  // namespace
