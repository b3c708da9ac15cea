// agenttune's batched greedy decoding (eval::generate_batch: left padding, one KV cache per batch,
// finished rows dropped) against transformers' batched `generate` (left padding, attention mask,
// greedy, bench/batched_generate_reference.py in its own process), on the CPU, the same model folder,
// prompts, batch size and new tokens. Prints tokens/s side by side, the ratio, and whether the two
// decoded the same tokens.
//
// usage: bench_batched_generate [--model DIR] [--prompts 32] [--min-len 16] [--max-len 96] [--batch 8]
//        [--max-new 32] [--runs 3] [--threads N] [--python .venv/bin/python] [--reference on|off]
// --model: an HF Llama folder; one that does not exist is created there first (random weights, seed
// 0, fp32): hidden 512, 6 layers, 8 heads, 4 kv heads, ffn 1408, vocabulary 32000. Prompt ids are
// drawn from a seeded generator, lengths uniform in [--min-len, --max-len]. No stop id: every row
// decodes --max-new tokens in both runs. Each side runs once to warm up, then --runs timed times;
// the median is reported.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agenttune/eval/batched_generation.h"
#include "agenttune/io/hf_checkpoint.h"

namespace fs = std::filesystem;
using namespace agenttune;

namespace {

struct Args {
  fs::path model = "bench_models/batched_generate";
  int64_t prompts = 32, min_len = 16, max_len = 96, batch = 8, max_new = 32, runs = 3;
  int threads = at::get_num_threads();
  std::string python = ".venv/bin/python";
  bool reference = true;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "bench_batched_generate: %s\n", why.c_str());
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(k + " needs a value");
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--prompts") a.prompts = std::stoll(v);
    else if (k == "--min-len") a.min_len = std::stoll(v);
    else if (k == "--max-len") a.max_len = std::stoll(v);
    else if (k == "--batch") a.batch = std::stoll(v);
    else if (k == "--max-new") a.max_new = std::stoll(v);
    else if (k == "--runs") a.runs = std::stoll(v);
    else if (k == "--threads") a.threads = std::stoi(v);
    else if (k == "--python") a.python = v;
    else if (k == "--reference" && (v == "on" || v == "off")) a.reference = v == "on";
    else if (k == "--reference") usage("--reference is on or off, not '" + v + "'");
    else usage("unknown option " + k);
  }
  if (a.min_len < 1 || a.max_len < a.min_len || a.prompts < 1 || a.batch < 1 || a.runs < 1)
    usage("need 1 <= --min-len <= --max-len, --prompts, --batch and --runs >= 1");
  return a;
}

void make_model(const fs::path& dir) {
  LlamaConfig c;
  c.hidden_size = 512, c.num_hidden_layers = 6, c.num_attention_heads = 8, c.num_key_value_heads = 4;
  c.intermediate_size = 1408, c.vocab_size = 32000, c.max_position_embeddings = 2048;
  auto m = make_llama(c, 0);
  save_pretrained(m, dir);
  std::printf("created %s (random weights)\n", dir.c_str());
}

std::vector<std::vector<int64_t>> make_prompts(const Args& a, int64_t vocab) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < a.prompts; ++i) {
    const int64_t len = at::randint(a.min_len, a.max_len + 1, {1}, gen, at::kLong).item<int64_t>();
    // Ids 3.. (clear of the special ids), as text would be.
    auto ids = at::randint(3, vocab, {len}, gen, at::kLong);
    out.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + len);
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  at::set_num_threads(a.threads);
  if (!fs::exists(a.model / "config.json")) make_model(a.model);
  auto loaded = load_pretrained(a.model, {.dtype = at::kFloat});
  auto em = eval::plain_eval_model(loaded.model);
  const auto prompts = make_prompts(a, em->config().vocab_size);
  eval::BatchGenerationOptions opts;
  opts.max_new_tokens = a.max_new, opts.batch_size = a.batch;

  auto ours = eval::generate_batch(*em, prompts, opts);  // warm-up
  std::vector<double> seconds;
  for (int64_t r = 0; r < a.runs; ++r) {
    ours = eval::generate_batch(*em, prompts, opts);
    seconds.push_back(ours.seconds);
  }
  int64_t new_tokens = 0;
  for (const auto& t : ours.tokens) new_tokens += static_cast<int64_t>(t.size());
  const double ours_tps = static_cast<double>(new_tokens) / median(seconds);
  std::printf("model %s, %lld prompts of %lld-%lld tokens, batch %lld, %lld new tokens each, %d threads, CPU\n",
              a.model.c_str(), static_cast<long long>(a.prompts), static_cast<long long>(a.min_len),
              static_cast<long long>(a.max_len), static_cast<long long>(a.batch), static_cast<long long>(a.max_new),
              a.threads);
  std::printf("%-28s %10s %12s\n", "", "median s", "new tok/s");
  std::printf("%-28s %10.3f %12.1f\n", "agenttune generate_batch", median(seconds), ours_tps);
  if (!a.reference) return 0;

  const fs::path prompt_file = fs::temp_directory_path() / fmt::format("batched_generate_prompts_{}.json", getpid());
  std::ofstream(prompt_file) << nlohmann::json(prompts).dump();
  const std::string cmd = fmt::format(
      "{} {}/bench/batched_generate_reference.py --model {} --prompts {} --batch {} --max-new {} --runs {} --threads {}",
      a.python, AGENTTUNE_SOURCE_DIR, a.model.string(), prompt_file.string(), a.batch, a.max_new, a.runs, a.threads);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) usage("cannot run " + cmd);
  std::string out;
  char buf[1 << 16];
  while (std::fgets(buf, sizeof buf, pipe)) out += buf;
  const int status = pclose(pipe);
  fs::remove(prompt_file);
  // Its result is the last line that is a JSON object (libraries may print before it).
  const auto at = out.rfind("\n{") == std::string::npos ? (out.rfind('{', 0) == 0 ? 0 : std::string::npos)
                                                          : out.rfind("\n{") + 1;
  if (status != 0 || at == std::string::npos) usage("the reference failed: " + cmd + "\n" + out);
  const auto ref = nlohmann::json::parse(out.substr(at));
  const double ref_s = median(ref["seconds"].get<std::vector<double>>());
  const double ref_tps = ref["new_tokens"].get<double>() / ref_s;
  std::printf("%-28s %10.3f %12.1f\n", "transformers generate", ref_s, ref_tps);
  std::printf("ratio (agenttune / transformers): %.2fx\n", ours_tps / ref_tps);
  const auto ref_tokens = ref["tokens"].get<std::vector<std::vector<int64_t>>>();
  int64_t same = 0;
  for (size_t i = 0; i < prompts.size(); ++i) same += ref_tokens[i] == ours.tokens[i] ? 1 : 0;
  std::printf("tokens equal to transformers': %lld of %zu prompts\n", static_cast<long long>(same), prompts.size());
  return 0;
}
