// Padded batches against an independent computation: the loss of a padded, width-cut micro-batch
// under plain causal attention equals the sum of each document's loss computed alone, so padding
// neither leaks into real tokens nor counts in the loss.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "agenttune/data/mixture.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"
#include "synthetic_corpus.h"
#include "test_paths.h"

namespace agenttune {
namespace {

TEST(Padding, PaddedBatchLossEqualsEachDocumentAlone) {
  torch::NoGradGuard ng;
  MixtureOptions o;
  o.sources = {{"chat", testing::make_synthetic_source(testing::scratch_dir() / "chat", 12, 10, 5, 5, 60, 64), 1.0}};
  o.seq_len = 96;
  o.packing = Packing::Pad;
  Mixture data(o);
  LlamaConfig c;
  c.vocab_size = 64, c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 128;
  auto model = make_llama(c, 7);
  for (int step = 0; step < 3; ++step) {
    auto b = data.next_batch(4);
    ASSERT_LT(b.tokens.size(1), 96) << "the batch should have been cut to its longest row";
    const double batched = cross_entropy_sum(model->forward(b.tokens, b.positions), b.targets).item<double>();
    double alone = 0;
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t len = (b.tokens[r] != 0).sum().item<int64_t>();  // synthetic tokens are never 0
      auto tok = b.tokens[r].narrow(0, 0, len).unsqueeze(0);
      auto tgt = b.targets[r].narrow(0, 0, len).unsqueeze(0);
      alone += cross_entropy_sum(model->forward(tok, default_positions(1, len, 0, at::kCPU)), tgt).item<double>();
    }
    EXPECT_NEAR(batched, alone, 1e-4 * std::abs(alone)) << "step " << step;
  }
}

}  // namespace
}  // namespace agenttune
