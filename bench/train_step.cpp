// agenttune's training step against the PyTorch reference (transformers' LlamaForCausalLM with SDPA
// + torch.optim.AdamW(fused=True) + clip_grad_norm_, bench/train_step_reference.py) at the same
// shape, batch, dtype, device and thread count, measured so that it cannot flatter us: every row is
// its own process, run alone (one process at a time, nothing else of the bench alive), and the
// rows alternate as whole runs (rep 1: A B C ..., rep 2: B C ... A, ...). A live worker beside our
// run would share the cores and move with it. Each process gets the same thread count and OpenMP
// wait policy through its environment (both torch builds here use the same libgomp), sets its
// intra-op threads to it, and reports what it sees; the bench prints both.
//
// Rows: the library step (`train_step`) with each --strategies entry over a world of one; packed
// SFT with document isolation (the first strategy; half the tokens trained, documents of 40-300
// tokens); the reference; and `agenttune train` itself with each --train-strategies entry on the
// tiny pretraining config with this shape, micro-batch = global batch = --batch, no evaluation or
// checkpoints (data prepared once from the tiny corpora by `agenttune prepare`; its figure is the
// median logged step_seconds after the warm-up steps; the process is killed once it has logged
// them, before the end-of-run checkpoint). A run's figure is the median of its timed steps (each
// drained); a row's is the median over its runs, with the spread (min-max). Columns: ms/step,
// tokens/s, the ratio to the reference, MFU (full and causal attention FLOPs; needs a peak: the
// device table on a GPU, --peak-tflops anywhere), the allocator's peak (CUDA's for both sides; on
// CPU ours through a counting allocator) and the process's peak RSS.
// --phases adds where the library step's time goes (each phase drained, so slower).
// --adapters none,lora,qlora: every row above once per entry, each adapter's rows against its own
// reference: LoRA of --rank / --alpha on all seven projections (dropout 0, the base frozen) for
// the step and `agenttune train` (model.adapter) against PEFT's get_peft_model on transformers'
// model with the fused AdamW over the adapters; QLoRA the same over an NF4 base against PEFT on
// bitsandbytes' 4-bit (NF4, double-quantised) model. MFU keeps the full fine-tune's 6N convention,
// as `agenttune train` logs it, though a frozen base's weight gradients are never computed.
//
//   bench_train_step [--device cpu|cuda] [--dtype float32|bfloat16] [--threads 2] [--reps 3]
//       [--warmup 2] [--steps 5] [--hidden 512] [--ffn 1408] [--layers 4] [--heads 8] [--kv-heads 8]
//       [--vocab 32000] [--seq 512] [--batch 4] [--strategies full_shard,no_shard] [--sft on|off]
//       [--reference eager|compiled|off] [--train on|off] [--train-strategies LIST (default: --strategies)]
//       [--adapters none|lora|qlora,...] [--rank 16] [--alpha 32] [--omp-wait-policy default|passive|active]
//       [--python .venv/bin/python] [--peak-tflops X]
//       [--agenttune build/agenttune] [--source DIR] [--tokenizer FILE] [--work DIR] [--phases]
// --reference compiled: the reference's model under torch.compile (default mode; compiling happens
// in its warm-up, before any timing).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "agenttune/model/adapter.h"
#include "agenttune/model/flops.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/lora.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/device_peak.h"
#include "agenttune/train/step.h"
#include "agenttune/util/host_memory.h"

using namespace agenttune;
namespace fs = std::filesystem;

namespace {

struct Args {
  std::string device = "cpu", dtype = "float32", strategies = "full_shard,no_shard", train_strategies;
  std::string python = ".venv/bin/python", agenttune = AGENTTUNE_BINARY, source = AGENTTUNE_SOURCE_DIR;
  std::string tokenizer, work, omp_wait_policy = "default", adapters = "none";
  int threads = 2, reps = 3, warmup = 2, steps = 5;
  int64_t hidden = 512, ffn = 1408, layers = 4, heads = 8, kv_heads = 8, vocab = 32000, seq = 512, batch = 4;
  int64_t rank = 16;
  double alpha = 32;
  std::string reference = "eager";  // eager | compiled (torch.compile of the model) | off
  bool sft = true, train = true, phases = false;
  double peak_tflops = 0;
  // A worker process (started by the driver): "step" or "sft" with one strategy and adapter kind.
  std::string worker, strategy, adapter = "none";
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

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  for (size_t b = 0, e; b < s.size(); b = e + 1) {
    e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    if (e > b) out.push_back(s.substr(b, e - b));
  }
  return out;
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
                                            {"--vocab", &a.vocab},   {"--seq", &a.seq},   {"--batch", &a.batch},
                                            {"--rank", &a.rank}};
    std::map<std::string, int*> small = {
        {"--threads", &a.threads}, {"--reps", &a.reps}, {"--warmup", &a.warmup}, {"--steps", &a.steps}};
    std::map<std::string, std::string*> strings = {
        {"--device", &a.device},       {"--dtype", &a.dtype},           {"--strategies", &a.strategies},
        {"--python", &a.python},       {"--agenttune", &a.agenttune},   {"--source", &a.source},
        {"--tokenizer", &a.tokenizer}, {"--work", &a.work},             {"--train-strategies", &a.train_strategies},
        {"--worker", &a.worker},       {"--strategy", &a.strategy},     {"--omp-wait-policy", &a.omp_wait_policy},
        {"--adapters", &a.adapters},   {"--adapter", &a.adapter}};
    if (auto it = ints.find(k); it != ints.end()) *it->second = std::stoll(v);
    else if (auto s = small.find(k); s != small.end()) *s->second = std::stoi(v);
    else if (auto t = strings.find(k); t != strings.end()) *t->second = v;
    else if (k == "--sft") a.sft = on_off(k, v);
    else if (k == "--train") a.train = on_off(k, v);
    else if (k == "--reference") a.reference = v == "on" ? "eager" : v;
    else if (k == "--peak-tflops") a.peak_tflops = std::stod(v);
    else if (k == "--alpha") a.alpha = std::stod(v);
    else usage("unknown flag " + k);
  }
  if (a.dtype != "float32" && a.dtype != "bfloat16") usage("--dtype is float32 or bfloat16");
  if (a.device != "cpu" && a.device != "cuda") usage("--device is cpu or cuda");
  if (a.reference != "eager" && a.reference != "compiled" && a.reference != "off")
    usage("--reference is eager, compiled or off, not '" + a.reference + "'");
  if (a.omp_wait_policy != "default" && a.omp_wait_policy != "passive" && a.omp_wait_policy != "active")
    usage("--omp-wait-policy is default, passive or active");
  if (a.reps < 1 || a.steps < 1 || a.warmup < 0) usage("--reps and --steps must be >= 1, --warmup >= 0");
  for (const auto& kind : split_list(a.adapters + "," + a.adapter))
    if (!parse_enum<AdapterKind>(kind)) usage("--adapters lists none, lora or qlora, not '" + kind + "'");
  if (split_list(a.adapters).empty()) usage("--adapters needs at least one of none, lora, qlora");
  if (a.rank < 1) usage("--rank must be >= 1");
  if (a.train_strategies.empty()) a.train_strategies = a.strategies;
  if (a.tokenizer.empty()) a.tokenizer = a.source + "/../shared/fixtures/llama2-tokenizer.model";
  if (a.work.empty()) a.work = (fs::temp_directory_path() / "bench_train_step").string();
  return a;
}

// ---------------------------------------------------------------------------------------------
// The worker: one library-step configuration in a process of its own.

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

void drain(c10::Device dev) {
  if (dev.is_cuda()) c10::impl::getDeviceGuardImpl(dev.type())->synchronizeDevice(dev.index());
}

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

LlamaConfig model_config(const Args& a) {
  LlamaConfig c;
  c.vocab_size = a.vocab, c.hidden_size = a.hidden, c.intermediate_size = a.ffn, c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads, c.num_key_value_heads = a.kv_heads;
  c.max_position_embeddings = std::max<int64_t>(a.seq, 2048), c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = false;
  return c;
}

AdapterConfig adapter_config(const Args& a, const std::string& kind) {
  AdapterConfig c;
  c.kind = *parse_enum<AdapterKind>(kind);  // checked by parse()
  c.rank = a.rank, c.alpha = a.alpha;
  return c;
}

// The worker's model: the shape's fresh model, with --adapter's adapters (and NF4 base) on it.
LlamaForCausalLM bench_model(const Args& a) {
  auto model = make_llama(model_config(a), 0);
  const AdapterConfig adapter = adapter_config(a, a.adapter);
  if (!adapter.enabled()) return model;
  add_adapters(model, adapter);
  if (adapter.kind == AdapterKind::Qlora) quantize_projections(model, /*quantise_values=*/true);
  return model;
}

const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

// Prints one JSON line: the timed steps (ms, each drained), the last loss, the allocator's peak
// over the timed steps (everything live included), what this process runs with, and with
// --phases the per-phase times of extra steps.
int worker_main(const Args& a) {
  keep_freed_host_memory();  // as `agenttune train` does (build_run): the step is measured as it trains
  at::set_num_threads(a.threads);
  const c10::Device dev = a.device == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (!dev.is_cuda()) counting_allocator();
  const bool sft = a.worker == "sft";
  if (!sft && a.worker != "step") usage("--worker is step or sft");
  auto world = parallel::ProcessGroup::create(parallel::WorldInfo{}, dev);
  parallel::ShardOptions so;
  so.strategy = parallel::parse_shard_strategy(a.strategy);
  so.compute_dtype = a.dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  parallel::ShardedModel model(bench_model(a), *world, parallel::WorldInfo{}, so);
  AdamW opt(model.shard_params(), AdamWOptions{}, model.shard_decay());
  const std::vector<PackedBatch> batches = {sft ? sft_batch(a) : pretraining_batch(a)};
  const DevicePeak peak = device_peak(dev, a.peak_tflops);  // here: the driver never touches the device
  StepRequest req;
  req.lr = 1e-4;
  req.clip_grad_norm = 1.0;
  req.attention = sft ? AttentionMode::Document : AttentionMode::Causal;
  double loss = 0;
  auto timed_step = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    loss = train_step(model, opt, batches, req, *world).loss;
    drain(dev);
    return 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int i = 0; i < a.warmup; ++i) timed_step();
  reset_peak(dev);
  nlohmann::json ms = nlohmann::json::array();
  for (int i = 0; i < a.steps; ++i) ms.push_back(timed_step());
  nlohmann::json out = {{"step_ms", ms},
                        {"loss", loss},
                        {"peak_bytes", peak_bytes(dev)},
                        {"threads", at::get_num_threads()},
                        {"omp_wait_policy", env_or("OMP_WAIT_POLICY", "unset")},
                        {"peak_flops", peak.flops},
                        {"peak_source", peak.flops > 0 ? fmt::format("{:.1f} TFLOP/s ({})", peak.flops / 1e12, peak.source)
                                                       : std::string()}};
  if (a.phases) {
    StepPhaseTimes t;
    req.phase_times = &t;
    for (int i = 0; i < a.steps; ++i) train_step(model, opt, batches, req, *world);
    const double k = 1e3 / a.steps;
    out["phases_ms"] = {{"forward", t.forward * k},
                        {"backward", t.backward * k},
                        {"reduce", t.reduce * k},
                        {"optimizer", t.optimizer * k}};
  }
  std::fprintf(stderr, "%s\n", at::get_parallel_info().c_str());
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The driver: starts one process per run, one at a time.

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

enum class Kind { Step, Sft, Reference, Train };

struct Row {
  std::string name;
  Kind kind;
  std::string strategy;
  std::string adapter = "none";  // none | lora | qlora: the row's reference is the one of the same adapter
  std::vector<double> ms;  // one figure per run: the median of its timed steps
  int64_t peak = -1;       // allocator bytes; < 0 unknown
  int64_t rss = -1;        // the process's peak RSS
  double loss = 0;
  std::string threads;     // what the process reported (or, for `train`, what it was given)
  nlohmann::json phases;
};

struct Child {
  int status = 0;
  int64_t max_rss = 0;
};

// Runs argv alone with the bench's thread environment, stdout and stderr into `log`. With
// `done`, polls it while the child runs and kills the child (SIGKILL) once it returns true.
Child run_child(const std::vector<std::string>& argv, const fs::path& log,
                const std::function<bool()>& done = nullptr) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) usage("fork() failed");
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  Child c;
  rusage ru{};
  for (;;) {
    const pid_t r = wait4(pid, &c.status, done ? WNOHANG : 0, &ru);
    if (r == pid) break;
    if (r < 0) usage("wait4 failed");
    if (done()) {
      kill(pid, SIGKILL);
      wait4(pid, &c.status, 0, &ru);
      c.status = 0;  // killed on purpose, after it logged what was asked
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // rare: the poll must not compete for the cores
  }
  c.max_rss = static_cast<int64_t>(ru.ru_maxrss) * 1024;
  return c;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The last line of a log that is a JSON object holding `key`.
nlohmann::json last_json(const fs::path& log, const std::string& key) {
  std::ifstream in(log);
  nlohmann::json found;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains(key)) found = j;
  }
  return found;
}

[[noreturn]] void child_failed(const std::string& what, const fs::path& log) {
  const std::string text = read_file(log);
  std::fprintf(stderr, "bench_train_step: %s failed; the end of %s:\n%s\n", what.c_str(), log.c_str(),
               text.substr(text.size() > 3000 ? text.size() - 3000 : 0).c_str());
  std::exit(1);
}

// What a worker or the reference builds and runs: the shape, the run's settings and the adapter.
std::vector<std::string> shape_flags(const Args& a, const std::string& adapter) {
  return {"--hidden", std::to_string(a.hidden), "--ffn",      std::to_string(a.ffn),
          "--layers", std::to_string(a.layers), "--heads",    std::to_string(a.heads),
          "--kv-heads", std::to_string(a.kv_heads), "--vocab", std::to_string(a.vocab),
          "--seq",    std::to_string(a.seq),    "--batch",    std::to_string(a.batch),
          "--threads", std::to_string(a.threads), "--device", a.device,
          "--dtype",  a.dtype,                  "--warmup",   std::to_string(a.warmup),
          "--steps",  std::to_string(a.steps),   "--adapter",  adapter,
          "--rank",   std::to_string(a.rank),   "--alpha",    fmt::format("{}", a.alpha)};
}

// The tiny corpora as token shards, made once per work folder (not timed).
fs::path prepared_data(const Args& a) {
  const fs::path dir = fs::path(a.work) / "prepared";
  if (fs::exists(dir / "done")) return dir;
  fs::create_directories(dir);
  const Child c = run_child({a.agenttune, "prepare", "--config", a.source + "/configs/tiny/prepare.yaml", "--set",
                             "tokenizer=" + a.tokenizer, "--set", "corpora.0.output=" + (dir / "code").string(),
                             "--set", "corpora.1.output=" + (dir / "text").string()},
                            dir / "prepare.log");
  if (c.status != 0) child_failed("agenttune prepare (the train rows' data)", dir / "prepare.log");
  std::ofstream(dir / "done") << "ok\n";
  return dir;
}

// `agenttune train` on the tiny pretraining config at this shape: one micro-batch of --batch
// sequences per step, as the library step, no evaluation or checkpoint in the steps.
std::vector<std::string> train_argv(const Args& a, const std::string& strategy, const std::string& adapter,
                                    const fs::path& data, const fs::path& out) {
  const std::string shape = fmt::format(
      "{{vocab_size: {}, hidden_size: {}, intermediate_size: {}, num_hidden_layers: {}, num_attention_heads: {}, "
      "num_key_value_heads: {}, max_position_embeddings: {}}}",
      a.vocab, a.hidden, a.ffn, a.layers, a.heads, a.kv_heads, std::max<int64_t>(a.seq, 2048));
  std::vector<std::string> v = {a.agenttune, "train", "--config", a.source + "/configs/tiny/pretrain.yaml"};
  for (const std::string& s : std::initializer_list<std::string>{
           "output_dir=" + out.string(), "model.shape=" + shape, "model.compute_dtype=" + a.dtype,
        "data.seq_len=" + std::to_string(a.seq), "data.sources.0.path=" + (data / "code").string(),
        "data.sources.1.path=" + (data / "text").string(), "data.tokenizer=" + a.tokenizer,
        "train.micro_batch_size=" + std::to_string(a.batch), "train.global_batch_sequences=" + std::to_string(a.batch),
        "train.max_steps=" + std::to_string(a.warmup + a.steps + 1), "train.eval_interval=0",
        "train.threads=" + std::to_string(a.threads), "checkpoint.interval=1000000", "metrics.tensorboard=false",
        "dist.strategy=" + strategy, "dist.device=" + a.device})
    v.insert(v.end(), {"--set", s});
  if (a.peak_tflops > 0) v.insert(v.end(), {"--set", fmt::format("metrics.peak_tflops={}", a.peak_tflops)});
  if (adapter != "none")
    for (const std::string& s : {"model.adapter.kind=" + adapter, "model.adapter.rank=" + std::to_string(a.rank),
                                 fmt::format("model.adapter.alpha={}", a.alpha)})
      v.insert(v.end(), {"--set", s});
  return v;
}

std::vector<nlohmann::json> metrics_rows(const fs::path& file) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("step_seconds")) rows.push_back(j);
  }
  return rows;
}

void set_thread_environment(const Args& a) {
  const std::string n = std::to_string(a.threads);
  setenv("OMP_NUM_THREADS", n.c_str(), 1);
  setenv("MKL_NUM_THREADS", n.c_str(), 1);
  if (a.omp_wait_policy == "default") unsetenv("OMP_WAIT_POLICY");
  else setenv("OMP_WAIT_POLICY", a.omp_wait_policy == "active" ? "ACTIVE" : "PASSIVE", 1);
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (!a.worker.empty()) return worker_main(a);
  set_thread_environment(a);
  fs::create_directories(a.work);
  const std::string self = fs::canonical("/proc/self/exe").string();

  std::vector<Row> rows;
  for (const auto& ad : split_list(a.adapters)) {
    const std::string tag = ad == "none" ? "" : ad == "lora" ? "LoRA: " : "QLoRA: ";
    for (const auto& s : split_list(a.strategies)) rows.push_back({tag + "agenttune step " + s, Kind::Step, s, ad});
    if (a.sft)
      rows.push_back({tag + "agenttune step, packed SFT, document isolation (" + split_list(a.strategies).front() + ")",
                      Kind::Sft, split_list(a.strategies).front(), ad});
    if (a.train)
      for (const auto& s : split_list(a.train_strategies))
        rows.push_back({tag + "agenttune train " + s, Kind::Train, s, ad});
    const std::string peft = ad == "none" ? "" : ad == "lora" ? "PEFT + " : "PEFT + bitsandbytes 4-bit + ";
    if (a.reference != "off")
      rows.push_back({tag + (a.reference == "compiled" ? "PyTorch reference, compiled (" : "PyTorch reference (") + peft +
                          "transformers + fused AdamW)",
                      Kind::Reference, "", ad});
  }
  const fs::path data = a.train ? prepared_data(a) : fs::path();
  // The device's peak as a worker saw it (the driver never initialises the device: it would hold a
  // context beside every run), or --peak-tflops.
  double peak_flops = a.peak_tflops * 1e12;
  std::string peak_source = fmt::format("{:.1f} TFLOP/s (--peak-tflops)", a.peak_tflops);

  auto run = [&](Row& row, int rep, size_t index) {
    const fs::path log = fs::path(a.work) / fmt::format("rep{}_row{}.log", rep, index);
    std::vector<std::string> argv;
    if (row.kind == Kind::Step || row.kind == Kind::Sft) {
      argv = {self, "--worker", row.kind == Kind::Sft ? "sft" : "step", "--strategy", row.strategy};
      const auto f = shape_flags(a, row.adapter);
      argv.insert(argv.end(), f.begin(), f.end());
      if (a.phases) argv.push_back("--phases");
    } else if (row.kind == Kind::Reference) {
      argv = {a.python, a.source + "/bench/train_step_reference.py"};
      const auto f = shape_flags(a, row.adapter);
      argv.insert(argv.end(), f.begin(), f.end());
      if (a.reference == "compiled") argv.push_back("--compile");
    }
    if (row.kind != Kind::Train) {
      const Child c = run_child(argv, log);
      const auto j = last_json(log, "step_ms");
      if (c.status != 0 || j.is_null()) child_failed(row.name, log);
      row.ms.push_back(median(j["step_ms"].get<std::vector<double>>()));
      row.loss = j["loss"].get<double>();
      if (!j["peak_bytes"].is_null()) row.peak = std::max(row.peak, j["peak_bytes"].get<int64_t>());
      row.rss = std::max(row.rss, c.max_rss);
      row.threads = fmt::format("{} threads, OMP_WAIT_POLICY {}", j["threads"].get<int>(),
                                j["omp_wait_policy"].get<std::string>());
      if (j.contains("phases_ms")) row.phases = j["phases_ms"];
      if (a.peak_tflops <= 0 && j.contains("peak_flops") && j["peak_flops"].get<double>() > 0)
        peak_flops = j["peak_flops"].get<double>(), peak_source = j["peak_source"].get<std::string>();
      return;
    }
    const fs::path out = fs::path(a.work) / fmt::format("train_rep{}_row{}", rep, index);
    fs::remove_all(out);
    const int64_t last = a.warmup + a.steps;
    const Child c = run_child(train_argv(a, row.strategy, row.adapter, data, out), log, [&] {
      const auto r = metrics_rows(out / "metrics.jsonl");
      return !r.empty() && r.back()["step"].get<int64_t>() >= last;
    });
    std::vector<double> ms;
    for (const auto& r : metrics_rows(out / "metrics.jsonl")) {
      const int64_t step = r["step"].get<int64_t>();
      if (step <= a.warmup || step > last) continue;
      ms.push_back(1e3 * r["step_seconds"].get<double>());
      if (r["loss"].is_number()) row.loss = r["loss"].get<double>();
    }
    if (c.status != 0 || static_cast<int>(ms.size()) != a.steps) child_failed(row.name, log);
    row.ms.push_back(median(ms));
    row.rss = std::max(row.rss, c.max_rss);
    row.threads = fmt::format("train.threads {} (as given; OMP_WAIT_POLICY {})", a.threads,
                              env_or("OMP_WAIT_POLICY", "unset"));
    fs::remove_all(out);
  };
  // Whole runs alternate, and the order rotates each repetition so no row always follows another.
  for (int rep = 0; rep < a.reps; ++rep) {
    for (size_t k = 0; k < rows.size(); ++k) {
      const size_t i = (k + rep) % rows.size();
      run(rows[i], rep, i);
    }
    std::fprintf(stderr, "repetition %d/%d done\n", rep + 1, a.reps);
  }

  const LlamaConfig c = model_config(a);
  const auto flops = training_flops_per_token(c, a.seq);
  const double tokens = static_cast<double>(a.batch * a.seq);
  std::printf("shape: hidden %lld, ffn %lld, %lld layers, %lld heads (%lld kv), vocab %lld; micro-batch %lld x %lld "
              "tokens; %s %s\n",
              (long long)a.hidden, (long long)a.ffn, (long long)a.layers, (long long)a.heads, (long long)a.kv_heads,
              (long long)a.vocab, (long long)a.batch, (long long)a.seq, a.device.c_str(), a.dtype.c_str());
  std::printf("method: each row its own process, run alone, %d alternating runs per row (order rotating); a run = "
              "%d warm-up + %d timed steps, its figure the median step; rows: median over runs [min-max]\n",
              a.reps, a.warmup, a.steps);
  std::printf("threads: OMP_NUM_THREADS=MKL_NUM_THREADS=%d for every process, OMP_WAIT_POLICY=%s, GOMP_SPINCOUNT=%s, "
              "KMP_BLOCKTIME=%s (no effect: both torch builds use libgomp)\n",
              a.threads, env_or("OMP_WAIT_POLICY", "unset (libgomp's default: spin, then sleep)"),
              env_or("GOMP_SPINCOUNT", "unset"), env_or("KMP_BLOCKTIME", "unset"));
  for (const auto& r : rows) std::printf("  %s: %s\n", r.name.c_str(), r.threads.c_str());
  std::printf("MFU against %s\n", peak_flops > 0 ? peak_source.c_str() : "an unknown peak (give --peak-tflops)");
  // Each row's reference: the one of its adapter.
  auto reference_of = [&](const Row& row) -> const Row* {
    for (const auto& r : rows)
      if (r.kind == Kind::Reference && r.adapter == row.adapter) return &r;
    return nullptr;
  };
  int width = 62;  // the name column: the longest row's name
  for (const auto& r : rows) width = std::max(width, static_cast<int>(r.name.size()));
  std::printf("| %-*s | %9s | %17s | %9s | %6s | %9s | %11s | %12s | %10s | %8s |\n", width, "step", "ms/step",
              "runs min-max", "tokens/s", "ratio", "MFU full", "MFU causal", "peak alloc", "peak RSS", "loss");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(width + 2, '-').c_str(), std::string(11, '-').c_str(),
              std::string(19, '-').c_str(), std::string(11, '-').c_str(), std::string(8, '-').c_str(),
              std::string(11, '-').c_str(), std::string(13, '-').c_str(), std::string(14, '-').c_str(),
              std::string(12, '-').c_str(), std::string(10, '-').c_str());
  for (const auto& r : rows) {
    const double ms = median(r.ms), tps = tokens / ms * 1e3;
    const auto [lo, hi] = std::minmax_element(r.ms.begin(), r.ms.end());
    const Row* ref = reference_of(r);
    const std::string ratio = ref ? fmt::format("{:.3f}", median(ref->ms) / ms) : "-";
    const std::string mf = peak_flops > 0 ? fmt::format("{:.1f}%", 100 * flops.full * tps / peak_flops) : "-";
    const std::string mc = peak_flops > 0 ? fmt::format("{:.1f}%", 100 * flops.causal * tps / peak_flops) : "-";
    const std::string pk = r.peak >= 0 ? fmt::format("{:.1f} MB", r.peak / 1e6) : "-";
    std::printf("| %-*s | %9.1f | %17s | %9.0f | %6s | %9s | %11s | %12s | %7.1f MB | %8.4f |\n", width, r.name.c_str(), ms,
                fmt::format("{:.1f}-{:.1f}", *lo, *hi).c_str(), tps, ratio.c_str(), mf.c_str(), mc.c_str(),
                pk.c_str(), r.rss / 1e6, r.loss);
  }
  for (const auto& r : rows) {
    const Row* ref = reference_of(r);
    if (!ref || ref == &r) continue;
    std::string runs;
    for (size_t k = 0; k < r.ms.size() && k < ref->ms.size(); ++k)
      runs += fmt::format("{}{:.3f}", k ? " " : "", ref->ms[k] / r.ms[k]);
    std::printf("ratio %s: %.3f (per repetition: %s)\n", r.name.c_str(), median(ref->ms) / median(r.ms), runs.c_str());
  }
  // The library step and the trainer that calls it should cost the same per step.
  for (const auto& t : rows) {
    if (t.kind != Kind::Train) continue;
    for (const auto& s : rows)
      if (s.kind == Kind::Step && s.strategy == t.strategy && s.adapter == t.adapter) {
        const double gap = median(t.ms) / median(s.ms) - 1;
        std::printf("trainer vs library step (%s%s): %+.1f%% (%s 5%%)\n", t.strategy.c_str(),
                    t.adapter == "none" ? "" : (", " + t.adapter).c_str(), 100 * gap,
                    std::abs(gap) <= 0.05 ? "within" : "outside");
      }
  }

  if (a.phases) {
    std::printf("\nwhere the library step goes (ms per step, each phase drained; last run, %d steps)\n", a.steps);
    std::printf("| %-*s | %8s | %8s | %8s | %9s | %8s |\n", width, "step", "forward", "backward", "reduce", "optimizer",
                "total");
    std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(width + 2, '-').c_str(), std::string(10, '-').c_str(),
                std::string(10, '-').c_str(), std::string(10, '-').c_str(), std::string(11, '-').c_str(),
                std::string(10, '-').c_str());
    for (const auto& r : rows) {
      if (r.phases.is_null()) continue;
      const double f = r.phases["forward"], b = r.phases["backward"], d = r.phases["reduce"], o = r.phases["optimizer"];
      std::printf("| %-*s | %8.1f | %8.1f | %8.1f | %9.1f | %8.1f |\n", width, r.name.c_str(), f, b, d, o, f + b + d + o);
    }
  }
  return 0;
}
