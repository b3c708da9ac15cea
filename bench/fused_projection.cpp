// The decoder layers' forward + backward with q/k/v and gate/up as one matmul each (weights laid out
// in one flat buffer per layer, as the sharding engine holds them: model/fused_projection.h) against
// the same layers with separate weights, in one process, the two alternating repetition by
// repetition so that a shared machine's drift hits both alike. Prints min and median wall and CPU ms
// per pass (run with OMP_WAIT_POLICY=passive: spinning threads count as CPU time) and the largest
// relative difference of the input gradient.
//
//   bench_fused_projection [--threads 2] [--reps 10] [--hidden 512] [--ffn 1408] [--layers 4]
//       [--heads 8] [--kv-heads 8] [--seq 512] [--batch 4]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "agenttune/model/fused_projection.h"
#include "agenttune/model/llama.h"
#include "agenttune/util/host_memory.h"

using namespace agenttune;

namespace {

struct Pass {
  double ms = 0, cpu_ms = 0;  // wall; CPU time of the whole process (all threads), less moved by a busy machine
  at::Tensor grad;
};

// One forward + backward through the layers.
Pass pass(LlamaForCausalLM& m, const at::Tensor& x0, const at::Tensor& grad, const RopeTables& rope) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  auto x = x0.detach().requires_grad_(true);
  at::Tensor h = x;
  const AttentionSpec causal;
  for (auto& layer : m->model->layers) h = layer->forward(h, rope, causal, nullptr);
  h.backward(grad);
  for (auto& p : m->parameters()) p.mutable_grad().reset();
  return {1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
          1e3 * static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC, x.grad()};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, int64_t> a = {{"--threads", 2}, {"--reps", 10}, {"--hidden", 512}, {"--ffn", 1408},
                                      {"--layers", 4},  {"--heads", 8},  {"--kv-heads", 8}, {"--seq", 512},
                                      {"--batch", 4}};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!a.count(argv[i])) {
      std::fprintf(stderr, "bench_fused_projection: unknown flag %s (see the header of bench/fused_projection.cpp)\n", argv[i]);
      return 2;
    }
    a[argv[i]] = std::stoll(argv[i + 1]);
  }
  keep_freed_host_memory();  // as `agenttune train` does
  at::set_num_threads(static_cast<int>(a["--threads"]));
  LlamaConfig c;
  c.vocab_size = 128, c.hidden_size = a["--hidden"], c.intermediate_size = a["--ffn"];
  c.num_hidden_layers = a["--layers"], c.num_attention_heads = a["--heads"], c.num_key_value_heads = a["--kv-heads"];
  c.max_position_embeddings = std::max<int64_t>(a["--seq"], 2048), c.rms_norm_eps = 1e-5;
  auto separate = make_llama(c, 0), fused = make_llama(c, 0);
  flatten_layer_weights(fused);
  const int64_t B = a["--batch"], T = a["--seq"];
  auto x = at::randn({B, T, c.hidden_size}), grad = at::randn({B, T, c.hidden_size});
  auto rope = separate->rope().tables(default_positions(B, T, 0, at::kCPU), at::kFloat);
  pass(separate, x, grad, rope), pass(fused, x, grad, rope);  // warm-up
  std::vector<double> ms[2], cpu[2];
  double worst = 0;
  for (int64_t r = 0; r < a["--reps"]; ++r) {
    Pass s = pass(r % 2 ? fused : separate, x, grad, rope);
    Pass f = pass(r % 2 ? separate : fused, x, grad, rope);
    if (r % 2) std::swap(s, f);
    ms[0].push_back(s.ms), ms[1].push_back(f.ms), cpu[0].push_back(s.cpu_ms), cpu[1].push_back(f.cpu_ms);
    worst = std::max(worst, ((f.grad - s.grad).abs().max() / s.grad.abs().max()).item<double>());
  }
  std::printf("%lld layers fwd+bwd, [%lld x %lld] tokens, hidden %lld, ffn %lld, %d threads, %lld reps\n",
              static_cast<long long>(c.num_hidden_layers), static_cast<long long>(B), static_cast<long long>(T),
              static_cast<long long>(c.hidden_size), static_cast<long long>(c.intermediate_size), at::get_num_threads(),
              static_cast<long long>(a["--reps"]));
  const char* names[2] = {"separate projections", "fused q/k/v, gate/up"};
  for (int i = 0; i < 2; ++i)
    std::printf("%-22s wall min %8.1f median %8.1f ms; CPU min %8.1f median %8.1f ms\n", names[i],
                *std::min_element(ms[i].begin(), ms[i].end()), median(ms[i]),
                *std::min_element(cpu[i].begin(), cpu[i].end()), median(cpu[i]));
  std::printf("input grad, largest difference relative to its largest value: %.2e\n", worst);
  return 0;
}
