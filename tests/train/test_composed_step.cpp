// The whole training step against PyTorch, loss for loss: forward, the fused chunked loss,
// backward, gradient accumulation over micro-batches, clipping and AdamW, composed exactly as
// `agenttune train` composes them (train_step on a world of one), against transformers'
// LlamaForCausalLM + torch.optim.AdamW + clip_grad_norm_ (tests/train/py/step_oracle.py). Each
// part has its own oracle elsewhere; this one catches a wrong composition (a scale applied twice,
// a clip on the wrong norm, decay on a norm weight, a mask that lets packed documents meet).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/step.h"
#include "test_paths.h"
#include "tiny_llama.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 10, kMicro = 2, kRows = 2, kSeq = 24;
constexpr double kClip = 0.5;  // as tests/train/py/step_oracle.py

// Rows of 1-3 documents (positions restarting, an SFT-like mask hiding about a third of the
// targets) when packed; one whole causal sequence per row otherwise.
PackedBatch make_batch(at::Generator& g, int64_t vocab, bool packed) {
  PackedBatch b;
  b.tokens = at::randint(3, vocab, {kRows, kSeq}, g, at::kLong);
  b.positions = at::empty({kRows, kSeq}, at::kLong);
  b.doc_ids = at::zeros({kRows, kSeq}, at::kLong);
  b.targets = at::full({kRows, kSeq}, kIgnoreIndex, at::kLong);
  auto tok = b.tokens.accessor<int64_t, 2>();
  auto pos = b.positions.accessor<int64_t, 2>();
  auto doc = b.doc_ids.accessor<int64_t, 2>();
  auto tgt = b.targets.accessor<int64_t, 2>();
  auto coin = at::rand({kRows, kSeq}, g);
  auto hide = coin.accessor<float, 2>();
  for (int64_t r = 0; r < kRows; ++r) {
    int64_t start = 0, id = 0;
    while (start < kSeq) {
      const int64_t len = packed ? std::min<int64_t>(kSeq - start, 5 + (r * 7 + id * 5 + start) % 9) : kSeq;
      for (int64_t k = 0; k < len; ++k) {
        pos[r][start + k] = k;
        doc[r][start + k] = id;
        const bool masked = packed && hide[r][start + k] < 0.33f;
        if (k + 1 < len && !masked) tgt[r][start + k] = tok[r][start + k + 1];
      }
      start += len, ++id;
    }
  }
  b.trained_tokens = (b.targets != kIgnoreIndex).sum().item<int64_t>();
  b.real_tokens = kRows * kSeq;
  return b;
}

struct Trajectory {
  std::vector<double> loss, grad_norm;
};

Trajectory run_oracle(const fs::path& model, const std::vector<std::vector<PackedBatch>>& steps,
                      const std::vector<double>& lrs, const fs::path& dir) {
  NamedTensors t;
  t.emplace_back("lrs", at::tensor(lrs, at::kDouble));
  for (size_t s = 0; s < steps.size(); ++s)
    for (size_t m = 0; m < steps[s].size(); ++m) {
      const auto key = "." + std::to_string(s) + "." + std::to_string(m);
      const auto& b = steps[s][m];
      t.emplace_back("tokens" + key, b.tokens);
      t.emplace_back("targets" + key, b.targets);
      t.emplace_back("positions" + key, b.positions);
      t.emplace_back("doc_ids" + key, b.doc_ids);
    }
  write_safetensors(dir / "batches.safetensors", t);
  const auto script = testing::source_dir() / "tests/train/py/step_oracle.py";
  std::string out;
  const std::string cmd = testing::venv_python().string() + " '" + script.string() + "' '" + model.string() + "' '" +
                          (dir / "batches.safetensors").string() + "' '" + (dir / "oracle.safetensors").string() + "'";
  if (testing::run_command(cmd, &out) != 0) throw std::runtime_error(cmd + "\n" + out);
  auto f = SafetensorsFile::open(dir / "oracle.safetensors");
  Trajectory r;
  for (int s = 0; s < kSteps; ++s) {
    r.loss.push_back(f.tensor("loss")[s].item<double>());
    r.grad_norm.push_back(f.tensor("grad_norm")[s].item<double>());
  }
  return r;
}

void expect_same_trajectory(bool packed) {
  const auto dir = testing::scratch_dir();
  const LlamaConfig shape = testing::tiny_llama();
  auto model = make_llama(shape, 7);
  save_pretrained(model, dir / "model");

  auto g = at::make_generator<at::CPUGeneratorImpl>(packed ? 21 : 12);
  std::vector<std::vector<PackedBatch>> steps(kSteps);
  std::vector<double> lrs;
  for (int s = 0; s < kSteps; ++s) {
    for (int m = 0; m < kMicro; ++m) steps[s].push_back(make_batch(g, shape.vocab_size, packed));
    lrs.push_back(s < 3 ? 5e-3 * (s + 1) / 3 : 5e-3 * (1.0 - 0.05 * s));  // a warmup, then a decay
  }

  auto dist = parallel::ProcessGroup::create(parallel::WorldInfo{}, c10::Device(at::kCPU));
  parallel::ShardedModel sharded(model, *dist, parallel::WorldInfo{}, parallel::ShardOptions{});
  AdamW opt(sharded.shard_params(), {0.9, 0.95, 1e-8, 0.1}, sharded.shard_decay());
  Trajectory ours;
  for (int s = 0; s < kSteps; ++s) {
    StepRequest req;
    req.attention = packed ? AttentionMode::Document : AttentionMode::Causal;
    req.clip_grad_norm = kClip;
    req.lr = lrs[s];
    const StepOutcome o = train_step(sharded, opt, steps[s], req, *dist);
    ASSERT_TRUE(o.judgement.applied()) << o.judgement.reason;
    ours.loss.push_back(o.loss);
    ours.grad_norm.push_back(o.grad_norm);
  }

  const Trajectory ref = run_oracle(dir / "model", steps, lrs, dir);
  double worst = 0;
  for (int s = 0; s < kSteps; ++s) worst = std::max(worst, std::abs(ours.loss[s] / ref.loss[s] - 1));
  std::printf("composed step figures: %d steps, largest relative loss difference %.2e (loss %.5f -> %.5f)\n",
              kSteps, worst, ref.loss[0], ref.loss[kSteps - 1]);
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(ours.loss[s], ref.loss[s], 1e-5 * ref.loss[s]) << "step " << s + 1;
    EXPECT_NEAR(ours.grad_norm[s], ref.grad_norm[s], 1e-4 * ref.grad_norm[s]) << "step " << s + 1;
  }
  // The clip was active and the weights moved: the comparison covers the update.
  EXPECT_GT(ref.grad_norm[0], kClip);
  EXPECT_GT(std::abs(ref.loss[0] - ref.loss[kSteps - 1]), 1e-3);
}

TEST(ComposedStep, TenStepsEqualTransformersAdamWAndClipping) { expect_same_trajectory(false); }

TEST(ComposedStep, PackedDocumentsEqualEachDocumentAlone) { expect_same_trajectory(true); }

}  // namespace
}  // namespace agenttune
