// Batched decoding on an accelerator: nothing mixes host and device tensors, the tokens equal
// one-prompt-at-a-time decoding on the same device, and the host waits once per step (the step's
// new tokens), not per row or per layer.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "agenttune/eval/batched_generation.h"
#include "agenttune/model/generation.h"
#include "fake_device.h"
#include "tiny_llama.h"

namespace fd = agenttune::testing::fake_device;
using namespace agenttune;

namespace {

TEST(BatchedGenerationOnDevice, TokensEqualOnePromptAtATimeWithOneHostSyncPerStep) {
  const auto c = agenttune::testing::tiny_llama(97, 32, 48, 2, 4, 2, 64);
  auto model = make_llama(c, 8, fd::device());
  const std::vector<std::vector<int64_t>> prompts = {{5, 9, 13}, {7}, {11, 3, 2, 40, 41, 42, 17}, {60, 61}, {8, 8, 8, 8}};
  eval::BatchGenerationOptions opts;
  opts.max_new_tokens = 7;
  opts.batch_size = 3;
  SamplingOptions one;
  one.max_new_tokens = opts.max_new_tokens;
  // A stop id the model writes early for one prompt (its second token), so rows leave the batch.
  one.stop_ids = {generate(model, prompts[2], one).tokens[1]};
  opts.stop_ids = one.stop_ids;
  auto em = eval::plain_eval_model(model);
  fd::reset();
  const auto got = eval::generate_batch(*em, prompts, opts);
  const auto counted = fd::counters();
  EXPECT_EQ(counted.host_syncs, got.steps) << fd::describe(counted);
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(got.tokens[i], generate(model, prompts[i], one).tokens) << "prompt " << i;
  EXPECT_TRUE(got.stopped[2]);
}

}  // namespace
