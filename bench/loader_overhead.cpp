// Data-loader overhead per training step as a share of a tiny model's step time (goal < 2 %).
// Prints the time spent producing packed batches (mixture + packing from mmapped shards) next to
// the time of forward + backward + AdamW for the tiny default model, over the same steps.
//   bench_loader_overhead [steps=30]
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>

#include "agenttune/data/mixture.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/optimizer.h"

using namespace agenttune;
namespace fs = std::filesystem;

static fs::path make_source(const fs::path& dir, int64_t docs, uint64_t seed) {
  fs::create_directories(dir);
  std::mt19937_64 rng(seed);
  TokenShardWriter w(dir, "shard_00000", 32000);
  for (int64_t d = 0; d < docs; ++d) {
    std::vector<int32_t> t(50 + rng() % 1500);
    for (auto& x : t) x = 3 + static_cast<int32_t>(rng() % 31990);
    w.add_document(t);
  }
  ShardManifest m;
  m.vocab_size = 32000;
  m.dtype = shard_dtype_for_vocab(32000);
  auto e = w.finish();
  m.documents = e.documents, m.tokens = e.tokens, m.shards = {e};
  m.write(dir / "manifest.json");
  return dir;
}

int main(int argc, char** argv) {
  int steps = argc > 1 ? std::atoi(argv[1]) : 30;
  auto root = fs::temp_directory_path() / "agenttune_bench_loader";
  fs::remove_all(root);
  MixtureOptions mo;
  mo.sources = {{"code", make_source(root / "code", 3000, 1), 10}, {"text", make_source(root / "text", 600, 2), 1}};
  mo.seq_len = 128;
  Mixture data(mo);

  LlamaConfig c;  // configs/tiny/model.yaml
  c.vocab_size = 32000, c.hidden_size = 64, c.intermediate_size = 176, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 512;
  auto model = make_llama(c, 0);
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (auto& p : model->named_parameters()) params.emplace_back(p.key(), p.value());
  AdamW opt(params, {});

  using clock = std::chrono::steady_clock;
  double t_data = 0, t_step = 0;
  for (int s = 0; s < steps + 3; ++s) {
    auto t0 = clock::now();
    std::vector<PackedBatch> micro = {data.next_batch(4), data.next_batch(4)};  // global batch 8, as the tiny config
    auto t1 = clock::now();
    int64_t trained = micro[0].trained_tokens + micro[1].trained_tokens;
    for (auto& b : micro)
      (cross_entropy_sum(model->forward(b.tokens, b.positions), b.targets) / static_cast<double>(trained)).backward();
    opt.step(1e-3);
    opt.zero_grad();
    auto t2 = clock::now();
    if (s < 3) continue;  // warm-up
    t_data += std::chrono::duration<double>(t1 - t0).count();
    t_step += std::chrono::duration<double>(t2 - t1).count();
  }
  std::printf("steps %d, batch 8 x 128 tokens, tiny model (%d threads)\n", steps, at::get_num_threads());
  std::printf("data loader: %8.3f ms/step\n", 1e3 * t_data / steps);
  std::printf("model step:  %8.3f ms/step (forward + backward + AdamW)\n", 1e3 * t_step / steps);
  std::printf("loader share of step time: %.3f %% (goal < 2 %%)\n", 100.0 * t_data / (t_data + t_step));
  fs::remove_all(root);
  return 0;
}
