// What the sharding engine costs at world size 1: a training step (forward, backward, AdamW) of
// the same model on the same tokens, trained plainly (autograd on the module, AdamW on its own
// parameters; the reference) and through parallel::ShardedModel with each strategy over a process
// group of one, the trainer's path for a single GPU (NCCL on CUDA, Gloo on CPU). Prints ms/step,
// tokens/s and the overhead against the plain step (a world of one keeps every unit resident
// whatever the strategy; the plain step with activation checkpointing is printed for scale). The
// sharded step is train_step, the trainer's own (the plain one does not clip, so neither does it).
//   bench_sharding_overhead [--device cpu|cuda] [--steps 20] [--dtype float32|bfloat16]
//                           [--hidden 256] [--layers 4] [--seq 512] [--batch 4]
// On the GPU machine: build per ../shared/gpu/README.md, then
//   build/bench/bench_sharding_overhead --device cuda --dtype bfloat16 --hidden 2048 --layers 8 --seq 2048
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/optimizer.h"
#include "agenttune/train/step.h"
#include "autocast_guard.h"

using namespace agenttune;

namespace {

struct Args {
  std::string device = "cpu", dtype = "float32";
  int steps = 20;
  int64_t hidden = 256, layers = 4, seq = 512, batch = 4;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--device") a.device = v;
    else if (k == "--dtype") a.dtype = v;
    else if (k == "--steps") a.steps = std::stoi(v);
    else if (k == "--hidden") a.hidden = std::stoll(v);
    else if (k == "--layers") a.layers = std::stoll(v);
    else if (k == "--seq") a.seq = std::stoll(v);
    else if (k == "--batch") a.batch = std::stoll(v);
    else {
      std::fprintf(stderr, "unknown flag %s (see the header of bench/sharding_overhead.cpp)\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

using Step = std::function<double()>;  // one training step; returns the loss

// Mean ms/step over `steps` after 3 warm-up steps; the loss read back each step synchronises the
// device, so the clock sees finished work.
double time_steps(const Step& step, int steps) {
  for (int i = 0; i < 3; ++i) step();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  return 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  const c10::Device dev = a.device == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  const auto dtype = parse_dtype(a.dtype);
  LlamaConfig c;
  c.vocab_size = 32000, c.hidden_size = a.hidden, c.intermediate_size = a.hidden * 8 / 3 / 64 * 64 + 64;
  c.num_hidden_layers = a.layers, c.num_attention_heads = std::max<int64_t>(1, a.hidden / 64);
  c.num_key_value_heads = c.num_attention_heads, c.max_position_embeddings = a.seq;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto tokens = at::randint(3, c.vocab_size, {a.batch, a.seq + 1}, gen, at::kLong).to(dev);
  auto inputs = tokens.narrow(1, 0, a.seq), targets = tokens.narrow(1, 1, a.seq);
  auto positions = default_positions(a.batch, a.seq, 0, dev);
  const double denom = static_cast<double>(a.batch * a.seq);
  const AdamWOptions adam{};

  // The reference: the module's own parameters, autocast to the compute dtype.
  auto plain = make_llama(c, 0, dev);
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (auto& p : plain->named_parameters()) params.emplace_back(p.key(), p.value());
  AdamW plain_opt(params, adam);
  int64_t n_params = 0;
  for (auto& [n, p] : params) n_params += p.numel();
  std::printf("model: hidden %lld, %lld layers, %lld heads, vocab %lld (%.1fM params); batch %lld x %lld tokens; "
              "%s, compute %s, %d steps, %d threads\n",
              (long long)c.hidden_size, (long long)c.num_hidden_layers, (long long)c.num_attention_heads,
              (long long)c.vocab_size, n_params / 1e6, (long long)a.batch, (long long)a.seq, dev.str().c_str(),
              a.dtype.c_str(), a.steps, at::get_num_threads());
  const Step plain_step = [&] {
        at::Tensor loss;
        {
          AutocastGuard ac(dtype, dev.type());
          loss = cross_entropy_sum(plain->forward(inputs, positions), targets) / denom;
        }
        loss.backward();
        plain_opt.step(1e-4);
        plain_opt.zero_grad();
        return loss.item<double>();
      };
  const double plain_ms = time_steps(plain_step, a.steps);
  // full_shard re-gathers and recomputes each unit in backward: its fair reference is the plain
  // step with activation checkpointing (the same recompute, no communication).
  plain->recompute = Recompute::Full;
  const double plain_ac_ms = time_steps(plain_step, a.steps);
  const double tokens_per_step = static_cast<double>(a.batch * a.seq);
  std::printf("%-30s %10s %12s %10s\n", "path", "ms/step", "tokens/s", "overhead");
  std::printf("%-30s %10.2f %12.0f %10s\n", "plain (reference)", plain_ms, tokens_per_step / plain_ms * 1e3, "-");
  std::printf("%-30s %10.2f %12.0f %10s\n", "plain + recompute (reference)", plain_ac_ms,
              tokens_per_step / plain_ac_ms * 1e3, "-");

  auto dist = parallel::ProcessGroup::create(parallel::WorldInfo{}, dev);
  for (const char* name : {"full_shard", "shard_grad_op", "no_shard"}) {
    parallel::ShardOptions so;
    so.strategy = parallel::parse_shard_strategy(name);
    so.compute_dtype = dtype;
    parallel::ShardedModel sharded(make_llama(c, 0, dev), *dist, parallel::WorldInfo{}, so);
    AdamW opt(sharded.shard_params(), adam, sharded.shard_decay());
    PackedBatch b;
    b.tokens = inputs, b.targets = targets, b.positions = positions;
    b.doc_ids = at::zeros_like(inputs);
    b.trained_tokens = b.real_tokens = a.batch * a.seq;
    StepRequest req;
    req.lr = 1e-4;
    req.clip_grad_norm = 0;  // the plain reference does not clip
    const double ms = time_steps([&] { return train_step(sharded, opt, {b}, req, *dist).loss; }, a.steps);
    // A world of one keeps every unit resident whatever the strategy: the plain step is the reference.
    const double ref = plain_ms;
    std::printf("%-30s %10.2f %12.0f %+9.1f%%\n", (std::string(name) + " (" + dist->backend_name() + ", world 1)").c_str(),
                ms, tokens_per_step / ms * 1e3, 100.0 * (ms / ref - 1.0));
  }
  return 0;
}
