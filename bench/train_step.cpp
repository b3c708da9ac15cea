// agenttune's training step side by side with the PyTorch reference (transformers'
// LlamaForCausalLM with SDPA + torch.optim.AdamW(fused=True), bench/train_step_reference.py) at
// the same shape, batch, dtype, device and thread count, in one run: repetitions alternate between
// the two (a shared machine drifts by ~15 %), and medians are reported.
//
// Rows: agenttune pretraining with each --strategies entry (dist over a world of one, as a
// single-GPU run), packed SFT with document isolation (full_shard; half the tokens trained,
// documents of 40-300 tokens), and the reference. Columns: ms/step, tokens/s, the ratio to the
// reference, MFU in both conventions (full and causal attention FLOPs; needs a peak: the device
// table on a GPU, --peak-tflops anywhere), and peak memory (a configuration's resident bytes plus
// what its steps allocate on top: CUDA's allocator for both sides, on CPU agenttune's through a
// counting allocator; and the peak RSS of both processes).
// --phases adds a table of where agenttune's step time goes (each phase drained, so slower).
//
//   bench_train_step [--device cpu|cuda] [--dtype float32|bfloat16] [--threads 2] [--reps 5]
//       [--steps 2] [--hidden 512] [--ffn 1408] [--layers 4] [--heads 8] [--kv-heads 8]
//       [--vocab 32000] [--seq 512] [--batch 4] [--strategies full_shard,no_shard]
//       [--sft on|off] [--reference eager|compiled|off] [--python .venv/bin/python] [--peak-tflops X]
//       [--phases]
// --reference compiled: the reference's model under torch.compile (default mode; compiling happens
// in its warm-up, before any timing).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/model/flops.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"
#include "agenttune/train/device_peak.h"
#include "agenttune/train/step.h"

using namespace agenttune;

namespace {

struct Args {
  std::string device = "cpu", dtype = "float32", strategies = "full_shard,no_shard", python = ".venv/bin/python";
  int threads = 2, reps = 5, steps = 2;
  int64_t hidden = 512, ffn = 1408, layers = 4, heads = 8, kv_heads = 8, vocab = 32000, seq = 512, batch = 4;
  std::string reference = "eager";  // eager | compiled (torch.compile of the model) | off
  bool sft = true, phases = false;
  double peak_tflops = 0;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "bench_train_step: %s (flags: see the header of bench/train_step.cpp)\n", why.c_str());
  std::exit(2);
}

bool on_off(const std::string& flag, const std::string& v) {
  if (v == "on") return true;
  if (v == "off") return false;
  usage(flag + " takes on or off, not '" + v + "'");
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--phases") {
      a.phases = true;
      continue;
    }
    if (i + 1 >= argc) usage(k + " needs a value");
    std::string v = argv[++i];
    std::map<std::string, int64_t*> ints = {{"--hidden", &a.hidden}, {"--ffn", &a.ffn},   {"--layers", &a.layers},
                                            {"--heads", &a.heads},   {"--kv-heads", &a.kv_heads},
                                            {"--vocab", &a.vocab},   {"--seq", &a.seq},   {"--batch", &a.batch}};
    if (auto it = ints.find(k); it != ints.end()) *it->second = std::stoll(v);
    else if (k == "--device") a.device = v;
    else if (k == "--dtype") a.dtype = v;
    else if (k == "--threads") a.threads = std::stoi(v);
    else if (k == "--reps") a.reps = std::stoi(v);
    else if (k == "--steps") a.steps = std::stoi(v);
    else if (k == "--strategies") a.strategies = v;
    else if (k == "--sft") a.sft = on_off(k, v);
    else if (k == "--reference") a.reference = v == "on" ? "eager" : v;
    else if (k == "--python") a.python = v;
    else if (k == "--peak-tflops") a.peak_tflops = std::stod(v);
    else usage("unknown flag " + k);
  }
  if (a.dtype != "float32" && a.dtype != "bfloat16") usage("--dtype is float32 or bfloat16");
  if (a.device != "cpu" && a.device != "cuda") usage("--device is cpu or cuda");
  if (a.reference != "eager" && a.reference != "compiled" && a.reference != "off")
    usage("--reference is eager, compiled or off, not '" + a.reference + "'");
  return a;
}

// The default CPU allocator, counting live and peak bytes: CPU has no allocator statistics of
// its own, and peak memory is a column of the table.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* base) : base_(base) {}
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr p = base_->allocate(n);
    auto* ctx = new Ctx{p.release_context(), p.get_deleter(), n, this};
    void* data = p.get();
    add(static_cast<int64_t>(n));
    return {data, ctx, &CountingCpuAllocator::free_ctx, p.device()};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dst, const void* src, std::size_t n) const override { std::memcpy(dst, src, n); }
  void reset_peak() { peak_ = live_.load(); }
  int64_t peak() const { return peak_.load(); }
  int64_t live() const { return live_.load(); }

 private:
  struct Ctx {
    void* base_ctx;
    c10::DeleterFnPtr base_deleter;
    size_t bytes;
    CountingCpuAllocator* owner;
  };
  static void free_ctx(void* p) {
    auto* ctx = static_cast<Ctx*>(p);
    ctx->owner->add(-static_cast<int64_t>(ctx->bytes));
    if (ctx->base_deleter) ctx->base_deleter(ctx->base_ctx);
    delete ctx;
  }
  void add(int64_t n) {
    const int64_t now = live_.fetch_add(n) + n;
    int64_t p = peak_.load();
    while (now > p && !peak_.compare_exchange_weak(p, now)) {
    }
  }
  c10::Allocator* base_;
  std::atomic<int64_t> live_{0}, peak_{0};
};

CountingCpuAllocator* counting_allocator() {
  static auto* a = [] {
    auto* c = new CountingCpuAllocator(c10::GetDefaultCPUAllocator());
    c10::SetCPUAllocator(c, /*priority=*/100);
    return c;
  }();
  return a;
}

void reset_peak(c10::Device dev) {
  if (dev.is_cuda()) c10::getDeviceAllocator(dev.type())->resetPeakStats(dev.index());
  else counting_allocator()->reset_peak();
}

int64_t peak_bytes(c10::Device dev) {
  if (dev.is_cuda())
    return c10::getDeviceAllocator(dev.type())->getDeviceStats(dev.index()).allocated_bytes[0].peak;
  return counting_allocator()->peak();
}

int64_t live_bytes(c10::Device dev) {
  if (dev.is_cuda())
    return c10::getDeviceAllocator(dev.type())->getDeviceStats(dev.index()).allocated_bytes[0].current;
  return counting_allocator()->live();
}

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

// The reference worker: a child process answering "run N" with one JSON line.
class Reference {
 public:
  Reference(const Args& a, const std::string& script) {
    const std::string cmd = a.python + " " + script + " --hidden " + std::to_string(a.hidden) + " --ffn " +
                            std::to_string(a.ffn) + " --layers " + std::to_string(a.layers) + " --heads " +
                            std::to_string(a.heads) + " --kv-heads " + std::to_string(a.kv_heads) + " --vocab " +
                            std::to_string(a.vocab) + " --seq " + std::to_string(a.seq) + " --batch " +
                            std::to_string(a.batch) + " --threads " + std::to_string(a.threads) + " --device " +
                            a.device + " --dtype " + a.dtype + (a.reference == "compiled" ? " --compile" : "");
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) usage("pipe() failed");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      close(to_child[1]);
      close(from_child[0]);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    in_ = fdopen(to_child[1], "w");
    out_ = fdopen(from_child[0], "r");
    if (read_line() != "ready") usage("the reference did not start: " + cmd);
  }
  ~Reference() {
    if (in_) fclose(in_);
    if (out_) fclose(out_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  nlohmann::json run(int steps) {
    std::fprintf(in_, "run %d\n", steps);
    std::fflush(in_);
    auto line = read_line();
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.contains("error")) usage("the reference answered: " + line);
    return j;
  }

 private:
  std::string read_line() {
    char buf[4096];
    if (!std::fgets(buf, sizeof buf, out_)) return "";
    std::string s(buf);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

// The reference's ids, so both sides train on the same tokens.
at::Tensor bench_ids(const Args& a) {
  return ((at::arange(a.batch * a.seq, at::kLong) * 7919 + 13) % a.vocab).view({a.batch, a.seq});
}

PackedBatch pretraining_batch(const Args& a) {
  PackedBatch b;
  b.tokens = bench_ids(a);
  b.targets = labels_to_targets(b.tokens);
  b.positions = default_positions(a.batch, a.seq, 0, at::kCPU).contiguous();
  b.doc_ids = at::zeros({a.batch, a.seq}, at::kLong);
  b.trained_tokens = a.batch * (a.seq - 1);
  b.real_tokens = a.batch * a.seq;
  return b;
}

// Packed SFT: documents of 40-300 tokens back to back, positions restarting at each, targets on
// the second half of each document (the assistant's turn), none across a document boundary.
PackedBatch sft_batch(const Args& a) {
  PackedBatch b = pretraining_batch(a);
  auto pos = b.positions.accessor<int64_t, 2>();
  auto doc = b.doc_ids.accessor<int64_t, 2>();
  auto tgt = b.targets.accessor<int64_t, 2>();
  auto ids = b.tokens.accessor<int64_t, 2>();
  int64_t trained = 0;
  for (int64_t r = 0; r < a.batch; ++r) {
    int64_t t = 0, d = 0;
    while (t < a.seq) {
      const int64_t len = std::min<int64_t>(40 + (d * 97 + r * 31) % 261, a.seq - t);
      for (int64_t i = 0; i < len; ++i) {
        pos[r][t + i] = i;
        doc[r][t + i] = d;
        const bool last = i + 1 == len;
        tgt[r][t + i] = (i >= len / 2 && !last) ? ids[r][t + i + 1] : kIgnoreIndex;
        trained += tgt[r][t + i] != kIgnoreIndex;
      }
      t += len, ++d;
    }
  }
  b.trained_tokens = trained;
  return b;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Row {
  std::string name;
  std::vector<double> ms;
  int64_t peak = -1;  // allocator bytes; < 0 unknown
  StepPhaseTimes phases;
  double loss = 0;
};

// One agenttune configuration: a model, its sharded engine and optimizer, kept across
// repetitions so each repetition times steady-state steps.
struct Runner {
  int64_t resident = 0;  // bytes the configuration holds between steps (weights, optimizer state)
  std::unique_ptr<parallel::ShardedModel> model;
  std::unique_ptr<AdamW> opt;
  std::vector<PackedBatch> batches;
  AttentionMode attention = AttentionMode::Causal;
};

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  at::set_num_threads(a.threads);
  const c10::Device dev = a.device == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (!dev.is_cuda()) counting_allocator();
  const auto dtype = a.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  LlamaConfig c;
  c.vocab_size = a.vocab, c.hidden_size = a.hidden, c.intermediate_size = a.ffn, c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads, c.num_key_value_heads = a.kv_heads;
  c.max_position_embeddings = std::max<int64_t>(a.seq, 2048), c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = false;

  auto world = parallel::ProcessGroup::create(parallel::WorldInfo{}, dev);
  std::vector<std::string> names;
  for (size_t s = 0, e; s < a.strategies.size(); s = e + 1) {
    e = a.strategies.find(',', s);
    if (e == std::string::npos) e = a.strategies.size();
    names.push_back(a.strategies.substr(s, e - s));
  }
  std::vector<Runner> runners;
  std::vector<Row> rows;
  auto add_runner = [&](const std::string& strategy, bool sft) {
    parallel::ShardOptions so;
    so.strategy = parallel::parse_shard_strategy(strategy);
    so.compute_dtype = dtype;
    Runner r;
    const int64_t before = live_bytes(dev);
    r.model = std::make_unique<parallel::ShardedModel>(make_llama(c, 0), *world, parallel::WorldInfo{}, so);
    r.opt = std::make_unique<AdamW>(r.model->shard_params(), AdamWOptions{}, r.model->shard_decay());
    r.resident = live_bytes(dev) - before;
    r.batches = {sft ? sft_batch(a) : pretraining_batch(a)};
    r.attention = sft ? AttentionMode::Document : AttentionMode::Causal;
    runners.push_back(std::move(r));
    rows.push_back({sft ? "agenttune packed SFT, document isolation (" + strategy + ")" : "agenttune " + strategy});
  };
  for (const auto& n : names) add_runner(n, false);
  if (a.sft) add_runner(names.front(), true);

  std::unique_ptr<Reference> ref;
  Row ref_row{a.reference == "compiled" ? "PyTorch reference, compiled (transformers + fused AdamW)"
                                        : "PyTorch reference (transformers + fused AdamW)"};
  double ref_rss = 0;
  if (a.reference != "off") ref = std::make_unique<Reference>(a, std::string(AGENTTUNE_BENCH_DIR) + "/train_step_reference.py");

  StepRequest req;
  req.lr = 1e-4;
  req.clip_grad_norm = 1.0;
  auto run_steps = [&](Runner& r, int steps, StepPhaseTimes* times) {
    req.attention = r.attention;
    req.phase_times = times;
    double loss = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) loss = train_step(*r.model, *r.opt, r.batches, req, *world).loss;
    return std::pair{1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps, loss};
  };
  for (auto& r : runners) run_steps(r, 1, nullptr);  // warm-up

  for (int rep = 0; rep < a.reps; ++rep) {
    for (size_t i = 0; i < runners.size(); ++i) {
      // The configurations live side by side: a row's peak is its own resident bytes plus what
      // its steps added on top of everything live before them.
      reset_peak(dev);
      const int64_t live0 = live_bytes(dev);
      auto [ms, loss] = run_steps(runners[i], a.steps, nullptr);
      rows[i].ms.push_back(ms);
      rows[i].loss = loss;
      rows[i].peak = std::max(rows[i].peak, runners[i].resident + peak_bytes(dev) - live0);
    }
    if (ref) {
      auto j = ref->run(a.steps);
      ref_row.ms.push_back(j["ms_per_step"].get<double>());
      ref_row.loss = j["loss"].get<double>();
      if (!j["peak_bytes"].is_null()) ref_row.peak = j["peak_bytes"].get<int64_t>();
      ref_rss = j["peak_rss_bytes"].get<double>();
    }
    std::fprintf(stderr, "repetition %d/%d done\n", rep + 1, a.reps);
  }

  const auto flops = training_flops_per_token(c, a.seq);
  const DevicePeak peak = device_peak(dev, a.peak_tflops);
  const double tokens = static_cast<double>(a.batch * a.seq);
  std::printf("shape: hidden %lld, ffn %lld, %lld layers, %lld heads (%lld kv), vocab %lld; micro-batch %lld x %lld "
              "tokens; %s %s, %d threads; %d repetitions x %d steps, medians\n",
              (long long)a.hidden, (long long)a.ffn, (long long)a.layers, (long long)a.heads, (long long)a.kv_heads,
              (long long)a.vocab, (long long)a.batch, (long long)a.seq, dev.str().c_str(), a.dtype.c_str(),
              a.threads, a.reps, a.steps);
  std::printf("MFU against %s\n", peak.flops > 0 ? fmt::format("{:.1f} TFLOP/s ({})", peak.flops / 1e12, peak.source).c_str()
                                                  : "an unknown peak (give --peak-tflops)");
  const double ref_ms = ref ? median(ref_row.ms) : 0;
  std::printf("| %-58s | %9s | %9s | %6s | %9s | %11s | %12s | %8s |\n", "step", "ms/step", "tokens/s", "ratio",
              "MFU full", "MFU causal", "peak alloc", "loss");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(60, '-').c_str(), std::string(11, '-').c_str(),
              std::string(11, '-').c_str(), std::string(8, '-').c_str(), std::string(11, '-').c_str(),
              std::string(13, '-').c_str(), std::string(14, '-').c_str(), std::string(10, '-').c_str());
  auto print_row = [&](const Row& r) {
    const double ms = median(r.ms), tps = tokens / ms * 1e3;
    const std::string ratio = ref ? fmt::format("{:.3f}", ref_ms / ms) : "-";
    const std::string mf = peak.flops > 0 ? fmt::format("{:.1f}%", 100 * flops.full * tps / peak.flops) : "-";
    const std::string mc = peak.flops > 0 ? fmt::format("{:.1f}%", 100 * flops.causal * tps / peak.flops) : "-";
    const std::string pk = r.peak >= 0 ? fmt::format("{:.1f} MB", r.peak / 1e6) : "-";
    std::printf("| %-58s | %9.1f | %9.0f | %6s | %9s | %11s | %12s | %8.4f |\n", r.name.c_str(), ms, tps, ratio.c_str(),
                mf.c_str(), mc.c_str(), pk.c_str(), r.loss);
  };
  for (const auto& r : rows) print_row(r);
  if (ref) print_row(ref_row);
  std::printf("peak RSS: agenttune process %.1f MB (all rows), reference process %.1f MB\n", peak_rss_bytes() / 1e6,
              ref_rss / 1e6);
  if (ref && !rows.empty()) {
    for (size_t i = 0; i < rows.size(); ++i)
      std::printf("ratio %s: %.3f (repetitions: %s)\n", rows[i].name.c_str(), ref_ms / median(rows[i].ms),
                  [&] {
                    std::string s;
                    for (size_t k = 0; k < rows[i].ms.size(); ++k)
                      s += fmt::format("{}{:.3f}", k ? " " : "", ref_row.ms[k] / rows[i].ms[k]);
                    return s;
                  }()
                      .c_str());
  }

  if (a.phases) {
    std::printf("\nwhere the step goes (ms per step, each phase drained; %d steps)\n", a.steps);
    std::printf("| %-58s | %8s | %8s | %8s | %9s | %8s |\n", "step", "forward", "backward", "reduce", "optimizer",
                "total");
    std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(60, '-').c_str(), std::string(10, '-').c_str(),
                std::string(10, '-').c_str(), std::string(10, '-').c_str(), std::string(11, '-').c_str(),
                std::string(10, '-').c_str());
    for (size_t i = 0; i < runners.size(); ++i) {
      StepPhaseTimes t;
      run_steps(runners[i], a.steps, &t);
      const double k = 1e3 / a.steps;
      std::printf("| %-58s | %8.1f | %8.1f | %8.1f | %9.1f | %8.1f |\n", rows[i].name.c_str(), t.forward * k,
                  t.backward * k, t.reduce * k, t.optimizer * k, (t.forward + t.backward + t.reduce + t.optimizer) * k);
    }
  }
  return 0;
}
