// LoRA training against PEFT, step for step: our engine (ShardedModel with the frozen base and
// the adapters' decay group, train_step's clipping and AdamW) against transformers + peft +
// torch.optim.AdamW + clip_grad_norm_ (tests/oracle/peft_steps.py) on the same model, the same
// initial adapters (A drawn per the documented seeds, B zero) and the same batches: every step's
// loss, grad norm and every adapter gradient, and the adapters after the last step, in fp32.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/model/lora.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/step.h"
#include "agenttune/util/files.h"
#include "random_batch.h"
#include "test_paths.h"
#include "tiny_llama.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 5, kMicro = 2, kRows = 2, kSeq = 16;
constexpr double kClip = 0.05;       // below the first steps' norms: the clip is part of what is compared
// eps 1e-4, not 1e-8: the clipped gradients are ~4e-4 per element, and with a tiny eps Adam moves a
// near-zero gradient element by about lr * sign(g), so fp32 rounding noise in g (two correct fp32
// computations differ) becomes a different update: with 1e-8, PEFT in fp32 itself drifts up to 1e-4
// (elementwise) from PEFT in fp64 within five steps; with 1e-4 both stay within 2e-6 of it.
const AdamWOptions kAdamW{0.9, 0.95, 1e-4, 0.1};

// How far ours is from the reference, relative to it: the norm of the difference over the
// reference's norm, and the largest element's difference over the reference's largest magnitude.
struct Difference {
  double norm = 0, max = 0;
};
constexpr double kTolerance = 1e-5;

Difference difference(const at::Tensor& ours, const at::Tensor& ref) {
  const auto d = ours.to(at::kDouble) - ref.to(at::kDouble);
  const auto r = ref.to(at::kDouble);
  return {d.norm().item<double>() / std::max(1e-30, r.norm().item<double>()),
          d.abs().max().item<double>() / std::max(1e-30, r.abs().max().item<double>())};
}

// Checks one adapter tensor, keeping the worst figures seen.
void expect_close(const at::Tensor& ours, const at::Tensor& ref, const std::string& what, Difference& worst) {
  if (ref.abs().max().item<double>() == 0) {  // A's gradient while B is still zero
    EXPECT_EQ(at::count_nonzero(ours).item<int64_t>(), 0) << what;
    return;
  }
  const auto d = difference(ours, ref);
  worst.norm = std::max(worst.norm, d.norm);
  worst.max = std::max(worst.max, d.max);
  EXPECT_LE(d.norm, kTolerance) << what;
  EXPECT_LE(d.max, kTolerance) << what;
}

// Random rows, every next token trained except a masked prompt at the start of the first row.
PackedBatch make_batch(at::Generator& g, int64_t vocab) {
  auto b = testing::random_batch(g, vocab, kRows, kSeq);
  b.targets[0].narrow(0, 0, 5).fill_(kIgnoreIndex);
  b.trained_tokens = (b.targets != kIgnoreIndex).sum().item<int64_t>();
  return b;
}

// The adapters as our names -> tensors, from the engine's flat groups (a world of one holds each
// whole): their values, or the grads the last backward left.
std::map<std::string, at::Tensor> adapter_tensors(const parallel::ShardedModel& sm, bool grads) {
  std::map<std::string, at::Tensor> out;
  const auto layout = sm.layout();
  const auto shards = sm.shard_params();
  for (size_t i = 0; i < shards.size(); ++i) {
    const auto& group = layout["groups"][i];
    const at::Tensor flat = grads ? shards[i].second.grad() : shards[i].second.detach();
    EXPECT_EQ(flat.numel(), group["numel"].get<int64_t>()) << group["name"];
    for (const auto& p : group["params"]) {
      const auto shape = p["shape"].get<std::vector<int64_t>>();
      int64_t numel = 1;
      for (auto d : shape) numel *= d;
      out[p["name"].get<std::string>()] = flat.narrow(0, p["offset"].get<int64_t>(), numel).view(shape).clone();
    }
  }
  return out;
}

nlohmann::json run_spec(const AdapterConfig& a, const std::vector<double>& lrs) {
  return {{"rank", a.rank},       {"alpha", a.alpha},
          {"rslora", a.rslora},   {"init_seed", a.init_seed},
          {"targets", a.target_modules}, {"lrs", lrs},
          {"betas", {kAdamW.beta1, kAdamW.beta2}}, {"eps", kAdamW.eps},
          {"weight_decay", kAdamW.weight_decay}, {"clip", kClip}};
}

SafetensorsFile run_oracle(const fs::path& dir, const nlohmann::json& run,
                           const std::vector<std::vector<PackedBatch>>& steps) {
  NamedTensors t;
  for (size_t s = 0; s < steps.size(); ++s)
    for (size_t m = 0; m < steps[s].size(); ++m) {
      const auto key = "." + std::to_string(s) + "." + std::to_string(m);
      t.emplace_back("tokens" + key, steps[s][m].tokens);
      t.emplace_back("targets" + key, steps[s][m].targets);
    }
  write_safetensors(dir / "batches.safetensors", t);
  write_file_atomic(dir / "run.json", run.dump());
  const auto script = testing::source_dir() / "tests/oracle/peft_steps.py";
  std::string out;
  const std::string cmd = testing::venv_python().string() + " '" + script.string() + "' '" + (dir / "model").string() +
                          "' '" + (dir / "run.json").string() + "' '" + (dir / "batches.safetensors").string() + "' '" +
                          (dir / "oracle.safetensors").string() + "'";
  if (testing::run_command(cmd, &out) != 0) throw std::runtime_error(cmd + "\n" + out);
  return SafetensorsFile::open(dir / "oracle.safetensors");
}

void expect_same_training(const AdapterConfig& adapter) {
  const auto dir = testing::scratch_dir();
  const LlamaConfig shape = testing::tiny_llama();
  auto model = make_llama(shape, 5);
  save_pretrained(model, dir / "model");
  add_adapters(model, adapter);

  // The same micro-batches every step: random tokens the adapters can learn within five steps.
  auto g = at::make_generator<at::CPUGeneratorImpl>(17);
  std::vector<PackedBatch> micro;
  for (int m = 0; m < kMicro; ++m) micro.push_back(make_batch(g, shape.vocab_size));
  std::vector<std::vector<PackedBatch>> steps(kSteps, micro);
  std::vector<double> lrs;
  for (int s = 0; s < kSteps; ++s) lrs.push_back(s < 2 ? 2e-2 * (s + 1) / 2 : 2e-2 * (1.0 - 0.1 * s));
  const auto ref = run_oracle(dir, run_spec(adapter, lrs), steps);

  auto dist = parallel::ProcessGroup::create(parallel::WorldInfo{}, c10::Device(at::kCPU));
  parallel::ShardedModel sm(model, *dist, parallel::WorldInfo{}, parallel::ShardOptions{});
  AdamW opt(sm.shard_params(), kAdamW, sm.shard_decay());
  for (bool decay : sm.shard_decay()) EXPECT_TRUE(decay) << "every adapter matrix is decayed, as in torch's one group";
  const size_t adapters = 2 * adapter.target_modules.size() * shape.num_hidden_layers;
  double worst_loss = 0;
  Difference worst_grad, worst_final;
  for (int s = 0; s < kSteps; ++s) {
    SCOPED_TRACE("step " + std::to_string(s + 1));
    // The step's gradients, looked at and dropped; train_step then computes the same ones again.
    forward_backward(sm, steps[s], AttentionMode::Causal, *dist);
    const auto grads = adapter_tensors(sm, /*grads=*/true);
    opt.zero_grad();
    ASSERT_EQ(grads.size(), adapters);
    for (const auto& [name, grad] : grads)
      expect_close(grad, ref.tensor("grad." + std::to_string(s) + "." + name), name, worst_grad);
    StepRequest req;
    req.clip_grad_norm = kClip;
    req.lr = lrs[s];
    const StepOutcome o = train_step(sm, opt, steps[s], req, *dist);
    ASSERT_TRUE(o.judgement.applied()) << o.judgement.reason;
    const double ref_loss = ref.tensor("loss")[s].item<double>(), ref_norm = ref.tensor("grad_norm")[s].item<double>();
    worst_loss = std::max(worst_loss, std::abs(o.loss / ref_loss - 1));
    EXPECT_NEAR(o.loss, ref_loss, kTolerance * ref_loss);
    EXPECT_NEAR(o.grad_norm, ref_norm, kTolerance * ref_norm);
  }
  for (const auto& [name, value] : adapter_tensors(sm, /*grads=*/false))
    expect_close(value, ref.tensor("final." + name), name + " after the last step", worst_final);
  const double first = ref.tensor("loss")[0].item<double>(), last = ref.tensor("loss")[kSteps - 1].item<double>();
  std::printf("LoRA vs PEFT (rank %lld, alpha %g%s): %d steps, loss %.5f -> %.5f; relative difference, largest: loss "
              "%.2e; adapter grads %.2e (norm), %.2e (element); final adapters %.2e (norm), %.2e (element)\n",
              static_cast<long long>(adapter.rank), adapter.alpha, adapter.rslora ? ", rslora" : "", kSteps, first,
              last, worst_loss, worst_grad.norm, worst_grad.max, worst_final.norm, worst_final.max);
  // The clip was active and the adapters learned: the comparison covers the update.
  EXPECT_GT(ref.tensor("grad_norm")[0].item<double>(), kClip);
  EXPECT_GT(first - last, 1e-3);
}

AdapterConfig adapter(int64_t rank, double alpha, bool rslora) {
  AdapterConfig a;
  a.kind = AdapterKind::Lora;
  a.rank = rank;
  a.alpha = alpha;
  a.rslora = rslora;
  a.init_seed = 23;
  return a;
}

TEST(LoraPeftSteps, FiveStepsEqualPeftAndTorchAdamW) { expect_same_training(adapter(8, 16, false)); }

TEST(LoraPeftSteps, RsLoraFiveStepsEqualPeftAndTorchAdamW) { expect_same_training(adapter(16, 8, true)); }

}  // namespace
}  // namespace agenttune
