// Scale probe (issue 11): one training step of a model with Llama-2-7B's layer shape (hidden 4096,
// FFN 11008, 32 heads, vocab 32000) but 2 layers, at seq 4096, on the fake device, and its peak
// device bytes next to what `agenttune plan` predicts for the same shape and strategy. Not part of
// ctest (minutes, ~12 GB of host memory as "device" memory):
//   build/tests/fake_device_scale_probe [--seq 4096] [--layers 2] [--dtype fp32|bf16]
//       [--strategy full_shard|no_shard] [--checkpointing on|off]
// The step is train_step, the trainer's own; activation checkpointing is on by default, as in the
// 7B/70B recipe configs.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/DeviceGuard.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "agenttune/parallel/memory_plan.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/step.h"
#include "fake_device.h"

namespace fd = agenttune::testing::fake_device;
using namespace agenttune;

int main(int argc, char** argv) {
  int64_t seq = 4096, layers = 2;
  std::string dtype = "fp32", strategy = "full_shard", checkpointing = "on";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--seq") seq = std::stoll(v);
    else if (k == "--layers") layers = std::stoll(v);
    else if (k == "--dtype") dtype = v;
    else if (k == "--strategy") strategy = v;
    else if (k == "--checkpointing") checkpointing = v;
    else return std::fprintf(stderr, "unknown option %s\n", k.c_str()), 2;
  }
  LlamaConfig c;
  c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_hidden_layers = layers;
  c.num_attention_heads = 32, c.num_key_value_heads = 32, c.max_position_embeddings = seq;
  const auto compute = dtype == "bf16" ? at::kBFloat16 : at::kFloat;

  c10::DeviceGuard current(fd::device(0));
  parallel::ProcessGroup d(c10::make_intrusive<c10d::HashStore>(), 0, 1, fd::device(0));
  parallel::WorldInfo w;
  parallel::ShardOptions o;
  o.strategy = parallel::parse_shard_strategy(strategy);
  o.compute_dtype = compute;
  auto t0 = std::chrono::steady_clock::now();
  auto model = make_llama(c, 1);
  model->recompute = checkpointing == "on" ? Recompute::Full : Recompute::None;
  parallel::ShardedModel sm(model, d, w, o);
  model = nullptr;
  AdamW opt(sm.shard_params(), {}, sm.shard_decay());
  auto g = at::make_generator<at::CPUGeneratorImpl>(3);
  PackedBatch b;
  b.tokens = at::randint(0, c.vocab_size, {1, seq}, g, at::kLong);
  b.positions = at::arange(seq, at::kLong).unsqueeze(0);
  b.targets = labels_to_targets(b.tokens);
  b.doc_ids = at::zeros({1, seq}, at::kLong);
  b.trained_tokens = seq - 1, b.real_tokens = seq;
  fd::reset(0);
  auto t1 = std::chrono::steady_clock::now();
  StepRequest req;
  req.lr = 1e-4;
  const StepOutcome step = train_step(sm, opt, {b}, req, d);
  auto t2 = std::chrono::steady_clock::now();
  const auto counted = fd::counters(0);

  parallel::MemoryPlanInput in;
  in.model = c;
  in.strategy = o.strategy;
  in.seq_len = seq;
  in.compute_dtype = compute;
  in.recompute = checkpointing == "on" ? Recompute::Full : Recompute::None;
  const auto plan = parallel::plan_memory(in);
  auto gb = [](double b) { return b / (1024.0 * 1024 * 1024); };
  std::printf("scale probe: 7B layer shape, %lld layers, seq %lld, %s compute, %s, checkpointing %s, world 1\n",
              static_cast<long long>(layers), static_cast<long long>(seq), dtype.c_str(), strategy.c_str(),
              checkpointing.c_str());
  std::printf("  setup %.1f s, step %.1f s, loss %.4f, grad norm %.4f\n",
              std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count(),
              step.loss, step.grad_norm);
  std::printf("  peak device bytes: measured %.3f GiB, plan %.3f GiB (%+.1f%%)\n", gb(counted.peak_bytes),
              gb(plan.total()), 100.0 * (static_cast<double>(counted.peak_bytes) / plan.total() - 1));
  std::printf("  plan parts: params %.3f, grads %.3f, optimizer %.3f, activations at peak %.3f GiB\n",
              gb(plan.params()), gb(plan.grads()), gb(plan.optimizer), gb(plan.activations_peak));
  std::printf("  host syncs in the step: %lld, host->device bytes %lld\n", static_cast<long long>(counted.host_syncs),
              static_cast<long long>(counted.h2d_bytes));
  return 0;
}
