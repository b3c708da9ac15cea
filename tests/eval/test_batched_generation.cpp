// Batched greedy decoding against the one-prompt decoder it must equal, on a plain model and on
// the sharding engine's (2 Gloo ranks as threads, each with its own share of prompts), and the
// target log-probs eval scores with against the full logits.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "agenttune/eval/batched_generation.h"
#include "agenttune/eval/eval_model.h"
#include "agenttune/model/generation.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/util/error.h"
#include "thread_ranks.h"
#include "tiny_llama.h"

namespace {

using namespace agenttune;
using namespace agenttune::eval;

LlamaConfig decoding_config(c10::ScalarType dtype) {
  auto c = agenttune::testing::tiny_llama(/*vocab=*/211, /*hidden=*/64, /*ffn=*/96, /*layers=*/2, /*heads=*/4, /*kv_heads=*/2,
                               /*max_positions=*/128);
  c.dtype = dtype;
  return c;
}

// Prompts of lengths 1 to 17 in no order (some batches padded, some rows alone at their length).
std::vector<std::vector<int64_t>> prompts(int64_t vocab) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
  std::vector<std::vector<int64_t>> out;
  for (int64_t len : {5, 1, 17, 9, 4, 12, 2, 9, 7}) {
    auto ids = at::randint(vocab, {len}, gen, at::kLong);
    out.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + len);
  }
  return out;
}

std::vector<std::vector<int64_t>> one_at_a_time(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& ps,
                                                const BatchGenerationOptions& opts, std::vector<bool>* stopped = nullptr) {
  SamplingOptions s;
  s.max_new_tokens = opts.max_new_tokens;
  s.stop_ids = opts.stop_ids;
  std::vector<std::vector<int64_t>> out;
  for (const auto& p : ps) {
    auto r = generate(model, p, s);
    out.push_back(r.tokens);
    if (stopped) stopped->push_back(r.stopped);
  }
  return out;
}

// A model, the prompts, and what generate() writes for each alone. The stop ids are taken from what
// the model writes unstopped (the third token of two prompts' replies), so some rows stop early
// (and leave their batch) while others run to max_new_tokens.
struct DecodeCase {
  LlamaConfig cfg;
  LlamaForCausalLM model{nullptr};
  std::vector<std::vector<int64_t>> ps;
  BatchGenerationOptions opts;
  std::vector<std::vector<int64_t>> want;
  std::vector<bool> stopped;
};

DecodeCase decode_case(c10::ScalarType dtype, uint64_t seed, int64_t max_new_tokens, int64_t batch_size) {
  DecodeCase c;
  c.cfg = decoding_config(dtype);
  c.model = make_llama(c.cfg, seed);
  c.ps = prompts(c.cfg.vocab_size);
  c.opts.max_new_tokens = max_new_tokens;
  c.opts.batch_size = batch_size;
  const auto unstopped = one_at_a_time(c.model, c.ps, c.opts);
  c.opts.stop_ids = {unstopped[2][2], unstopped[5][2]};
  c.want = one_at_a_time(c.model, c.ps, c.opts, &c.stopped);
  EXPECT_GT(std::count(c.stopped.begin(), c.stopped.end(), true), 0);
  EXPECT_GT(std::count(c.stopped.begin(), c.stopped.end(), false), 0);
  return c;
}

void expect_equal_to_one_at_a_time(c10::ScalarType dtype) {
  const auto c = decode_case(dtype, 3, 12, 4);
  auto em = plain_eval_model(c.model);
  const auto got = generate_batch(*em, c.ps, c.opts);
  for (size_t i = 0; i < c.ps.size(); ++i) {
    EXPECT_EQ(got.tokens[i], c.want[i]) << "prompt " << i << " (" << c.ps[i].size() << " tokens)";
    EXPECT_EQ(got.stopped[i], c.stopped[i]) << "prompt " << i;
  }
  // Three batches of up to four rows: fewer forwards than one prompt at a time would run.
  EXPECT_LE(got.steps, 3 * c.opts.max_new_tokens);
}

TEST(BatchedGeneration, Fp32TokensEqualOnePromptAtATime) { expect_equal_to_one_at_a_time(at::kFloat); }

// In bf16 too: per-row positions read the same RoPE table rows, pad keys get exactly zero
// weight, and a row's argmax does not depend on the other rows.
TEST(BatchedGeneration, Bf16TokensEqualOnePromptAtATime) { expect_equal_to_one_at_a_time(at::kBFloat16); }

TEST(BatchedGeneration, BatchOfOneAndZeroNewTokens) {
  auto cfg = decoding_config(at::kFloat);
  auto model = make_llama(cfg, 4);
  const auto ps = prompts(cfg.vocab_size);
  auto em = plain_eval_model(model);
  BatchGenerationOptions opts;
  opts.max_new_tokens = 6;
  opts.batch_size = 1;
  EXPECT_EQ(generate_batch(*em, ps, opts).tokens, one_at_a_time(model, ps, opts));
  opts.max_new_tokens = 0;
  const auto none = generate_batch(*em, ps, opts);
  EXPECT_EQ(none.steps, 0);
  for (const auto& t : none.tokens) EXPECT_TRUE(t.empty());
}

TEST(BatchedGeneration, RefusesEmptyPromptsAndIdsOutsideTheVocabulary) {
  auto cfg = decoding_config(at::kFloat);
  auto em = plain_eval_model(make_llama(cfg, 4));
  try {
    generate_batch(*em, {{1, 2}, {}}, {});
    FAIL() << "an empty prompt was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prompt 1 has no tokens"), std::string::npos) << e.what();
  }
  try {
    generate_batch(*em, {{1, cfg.vocab_size}}, {});
    FAIL() << "an id past the vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prompt 0 token 1 (id 211)"), std::string::npos) << e.what();
  }
}

// In-loop eval's path: each rank decodes its own share (5 prompts and 4: a different number of
// batches, and rows stopping at different steps), every collective in step.
TEST(BatchedGeneration, ShardedTwoRanksEqualOnePromptAtATime) {
  const auto c = decode_case(at::kFloat, 5, 10, 2);
  std::vector<std::vector<std::vector<int64_t>>> got(2);
  agenttune::testing::run_ranks(2, [&](parallel::ProcessGroup& d, const parallel::WorldInfo& w) {
    parallel::ShardedModel sm(make_llama(c.cfg, 5), d, w, parallel::ShardOptions{});
    std::vector<std::vector<int64_t>> mine;
    for (size_t i = static_cast<size_t>(d.rank()); i < c.ps.size(); i += 2) mine.push_back(c.ps[i]);
    auto em = sharded_eval_model(sm, d);
    got[static_cast<size_t>(d.rank())] = generate_batch(*em, mine, c.opts).tokens;
  });
  for (size_t i = 0; i < c.ps.size(); ++i) {
    const auto& rank_out = got[i % 2];
    ASSERT_GT(rank_out.size(), i / 2);
    EXPECT_EQ(rank_out[i / 2], c.want[i]) << "prompt " << i;
  }
}

// Log-probs of chosen targets (only those positions reach the head) equal log_softmax of each
// sequence's own full logits; right padding needs no mask, left padding its padded_attention mask.
TEST(TargetLogprobs, EqualEachSequenceAloneRightAndLeftPadded) {
  auto cfg = decoding_config(at::kFloat);
  auto model = make_llama(cfg, 6);
  const auto ps = prompts(cfg.vocab_size);
  const std::vector<std::vector<int64_t>> seqs(ps.begin(), ps.begin() + 4);
  auto em = plain_eval_model(model);
  for (bool left : {false, true}) {
    const auto b = pad_batch(seqs, left);
    // Targets: each row's next token at its last three real positions (the continuation).
    auto targets = at::full(b.tokens.sizes(), kIgnoreIndex, at::kLong);
    auto tg = targets.accessor<int64_t, 2>();
    auto tok = b.tokens.accessor<int64_t, 2>();
    for (int64_t r = 0; r < b.tokens.size(0); ++r) {
      const int64_t end = left ? b.tokens.size(1) : b.lengths[r];
      for (int64_t t = std::max<int64_t>(end - b.lengths[r], end - 4); t + 1 < end; ++t) tg[r][t] = tok[r][t + 1];
    }
    AttentionSpec spec;
    if (left) spec = padded_attention(b.key_mask, 0, b.tokens.size(1), em->device());
    at::Tensor greedy;
    const auto lp = target_logprobs(*em, b.tokens, b.positions, spec, targets, &greedy);
    int64_t checked = 0;
    for (int64_t r = 0; r < b.tokens.size(0); ++r) {
      const int64_t start = left ? b.tokens.size(1) - b.lengths[r] : 0;
      auto alone = at::tensor(seqs[r], at::kLong).unsqueeze(0);
      auto logits = model->forward(alone, default_positions(1, alone.size(1), 0, at::kCPU)).detach();
      auto ref = at::log_softmax(logits[0].to(at::kFloat), -1);
      for (int64_t t = 0; t < b.tokens.size(1); ++t) {
        const int64_t want = targets[r][t].item<int64_t>();
        if (want == kIgnoreIndex) {
          EXPECT_EQ(lp[r][t].item<float>(), 0.0f);
          continue;
        }
        const auto row = ref[t - start];
        EXPECT_NEAR(lp[r][t].item<float>(), row[want].item<float>(), 1e-5) << "row " << r << " pos " << t;
        EXPECT_EQ(greedy[r][t].item<bool>(), row.argmax().item<int64_t>() == want);
        ++checked;
      }
    }
    EXPECT_GE(checked, 8);
    // The mask is what makes left padding right: without it the real tokens attend the pads.
    if (left) EXPECT_GT((target_logprobs(*em, b.tokens, b.positions, {}, targets) - lp).abs().max().item<float>(), 1e-3);
  }
}

// More scored rows than target_logprobs upcasts at once (64M logits: 2048 rows at a 32768-token
// vocabulary), so the rows go through in two blocks, whose seam must not shift a row.
TEST(TargetLogprobs, RowsPastOneBlockEqualTheFullLogits) {
  auto cfg = agenttune::testing::tiny_llama(/*vocab=*/32768, /*hidden=*/32, /*ffn=*/48, /*layers=*/1, /*heads=*/2,
                                            /*kv_heads=*/1, /*max_positions=*/2304);
  auto model = make_llama(cfg, 8);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  const int64_t T = 2100;
  const auto tokens = at::randint(cfg.vocab_size, {1, T}, gen, at::kLong);
  auto targets = at::full({1, T}, kIgnoreIndex, at::kLong);
  targets.narrow(1, 0, T - 1).copy_(tokens.narrow(1, 1, T - 1));
  auto em = plain_eval_model(model);
  const auto positions = default_positions(1, T, 0, at::kCPU);
  at::Tensor greedy;
  const auto lp = target_logprobs(*em, tokens, positions, {}, targets, &greedy);
  const auto ref = at::log_softmax(model->forward(tokens, positions).detach()[0].to(at::kFloat), -1);
  const auto want = ref.narrow(0, 0, T - 1).gather(1, tokens[0].narrow(0, 1, T - 1).unsqueeze(1)).squeeze(1);
  EXPECT_LT((lp[0].narrow(0, 0, T - 1) - want).abs().max().item<float>(), 1e-5);
  EXPECT_EQ(lp[0][T - 1].item<float>(), 0.0f);
  const auto argmax_hits = ref.narrow(0, 0, T - 1).argmax(-1) == tokens[0].narrow(0, 1, T - 1);
  EXPECT_TRUE(at::equal(greedy[0].narrow(0, 0, T - 1), argmax_hits));
}

}  // namespace
