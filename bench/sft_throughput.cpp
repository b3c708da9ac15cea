// SFT prepare throughput, side by side on the same generated conversations:
//   agenttune prepare_sft   read JSONL -> Conversations -> llama-2-chat render (ids + mask) -> shards
//   python reference        bench/sft_reference.py: json + the same rendering with transformers'
//                           AutoTokenizer (offsets -> mask) in N processes, writing ids + masks
// Half the conversations are AgentInstruct-style trajectories (task protocol, "Ok." with
// loss=false, thought/action/observation turns), half ShareGPT-style chats. The text has no runs
// of spaces, so both sides must produce the same token and trained-token counts (checked).
// usage: bench_sft_throughput --tokenizer M [--conversations 100000] [--threads N] [--dir D]
//                             [--python P] [--transform]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "agenttune/data/sft_prepare.h"
#include "agenttune/util/files.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

struct Rng {
  uint64_t s;
  uint64_t next() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t x = s;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  }
  int64_t in(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(next() % (hi - lo + 1)); }
};

const char* kSyllables[] = {"ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "den", "var", "ex", "il",
                            "on", "str", "cat", "file", "read", "get", "set", "user", "ver", "pro", "com", "ent"};

std::string words(Rng& r, int64_t n) {
  std::string s;
  for (int64_t i = 0; i < n; ++i) {
    if (i) s += r.in(0, 11) == 0 ? ", " : r.in(0, 15) == 0 ? ". " : " ";
    for (int64_t k = r.in(1, 3); k > 0; --k) s += kSyllables[r.next() % std::size(kSyllables)];
    if (r.in(0, 40) == 0) s += std::to_string(r.in(0, 9999));
  }
  return s + ".";
}

json turn(const char* from, std::string value, std::optional<bool> loss = std::nullopt, bool with_loss = false) {
  json t = {{"from", from}, {"value", std::move(value)}};
  if (with_loss) t["loss"] = loss ? json(*loss) : json(nullptr);
  return t;
}

json agent_record(Rng& r, int64_t i) {
  json c = json::array();
  c.push_back(turn("human", "You operate a Linux shell. Think first, then act with Act: bash or Act: answer. " +
                                words(r, r.in(30, 60)), std::nullopt, true));
  c.push_back(turn("gpt", "Ok.", false, true));
  c.push_back(turn("human", words(r, r.in(10, 30)) + "?", std::nullopt, true));
  for (int64_t s = r.in(2, 4); s > 0; --s) {
    c.push_back(turn("gpt", "Think: " + words(r, r.in(10, 30)) + "\n\nAct: bash\n\n```bash\nls -la /" +
                                words(r, 2) + " | wc -l\n```", true, true));
    c.push_back(turn("human", "The output of the OS:\n" + words(r, r.in(10, 40)), std::nullopt, true));
  }
  c.push_back(turn("gpt", "Think: " + words(r, r.in(5, 15)) + "\n\nAct: answer(" + std::to_string(r.in(0, 99)) + ")",
                   true, true));
  return {{"id", "os_" + std::to_string(i)}, {"conversations", std::move(c)}};
}

json chat_record(Rng& r, int64_t i) {
  json c = json::array();
  for (int64_t t = r.in(1, 3); t > 0; --t) {
    c.push_back(turn("human", words(r, r.in(8, 40)) + "?"));
    c.push_back(turn("gpt", words(r, r.in(30, 120))));
  }
  return {{"id", "sg_" + std::to_string(i)}, {"conversations", std::move(c)}};
}

std::vector<fs::path> generate(const fs::path& dir, int64_t n) {
  const std::vector<fs::path> files = {dir / "agentinstruct.jsonl", dir / "sharegpt.jsonl"};
  const auto marker = dir / ("done_" + std::to_string(n));
  if (fs::exists(marker)) return files;
  fs::remove_all(dir);
  fs::create_directories(dir);
  Rng r{42};
  std::ofstream a(files[0]), s(files[1]);
  for (int64_t i = 0; i < n; ++i) (i % 2 ? s : a) << (i % 2 ? chat_record(r, i) : agent_record(r, i)).dump() << "\n";
  a.close();
  s.close();
  std::ofstream(marker) << "";
  return files;
}

json run_python(const std::string& python, const fs::path& tok_dir, const std::vector<fs::path>& files,
                const fs::path& out, int threads) {
  std::string cmd = python + " " AGENTTUNE_SOURCE_DIR "/bench/sft_reference.py --tokenizer-dir " + tok_dir.string() +
                    " --processes " + std::to_string(threads) + " --out " + out.string();
  for (const auto& f : files) cmd += " " + f.string();
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string text;
  char buf[4096];
  for (size_t k; p && (k = std::fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, k);
  if (!p || ::pclose(p) != 0) {
    std::fprintf(stderr, "python reference failed: %s\n%s\n", cmd.c_str(), text.c_str());
    std::exit(1);
  }
  return json::parse(text.substr(text.rfind('{')));
}

}  // namespace

int main(int argc, char** argv) {
  fs::path model, dir = fs::temp_directory_path() / "agenttune_bench_sft";
  int64_t n = 100000;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string python = AGENTTUNE_SOURCE_DIR "/.venv/bin/python";
  bool transform = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--transform") {
      transform = true;
      continue;
    }
    if (i + 1 >= argc) return std::fprintf(stderr, "%s needs a value\n", a.c_str()), 2;
    std::string v = argv[++i];
    if (a == "--tokenizer") model = v;
    else if (a == "--conversations") n = std::stoll(v);
    else if (a == "--threads") threads = std::stoi(v);
    else if (a == "--dir") dir = v;
    else if (a == "--python") python = v;
    else return std::fprintf(stderr, "unknown option %s\n", a.c_str()), 2;
  }
  if (model.empty())
    return std::fprintf(stderr, "usage: %s --tokenizer MODEL [--conversations N] [--threads N] [--dir D]\n", argv[0]), 2;

  const auto files = generate(dir / "data", n);
  uint64_t bytes = 0;
  for (const auto& f : files) bytes += fs::file_size(f);
  std::printf("data: %lld conversations, %.1f MB of JSONL (%s); %d threads/processes\n", static_cast<long long>(n),
              bytes / 1e6, (dir / "data").c_str(), threads);

  agenttune::SftPrepareConfig cfg;
  cfg.tokenizer = model;
  cfg.chat_template = "llama-2-chat";
  cfg.threads = threads;
  cfg.progress = false;
  cfg.max_seq_len = 0;  // the reference does not truncate either
  for (const auto& f : files) {
    agenttune::SftDatasetConfig d;
    d.name = f.stem().string();
    d.paths = {f};
    d.output = dir / "out" / d.name;
    d.transform = transform && d.name == "agentinstruct";
    cfg.datasets.push_back(d);
  }
  cfg.transforms.format_following.enabled = false;
  cfg.transforms.negatives.enabled = false;
  const auto t0 = Clock::now();
  const auto report = agenttune::prepare_sft(cfg);
  const double ours_s = std::chrono::duration<double>(Clock::now() - t0).count();
  int64_t convs = 0, tokens = 0, trained = 0;
  for (const auto& d : report.datasets) {
    convs += d.kept;
    tokens += d.tokens;
    trained += d.trained_tokens;
  }

  // A tokenizer folder as `agenttune export` writes it for a lone .model.
  const auto tok_dir = dir / "hf_tokenizer";
  fs::create_directories(tok_dir);
  fs::copy_file(model, tok_dir / "tokenizer.model", fs::copy_options::overwrite_existing);
  std::ofstream(tok_dir / "tokenizer_config.json")
      << json{{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", "<s>"}, {"eos_token", "</s>"},
              {"unk_token", "<unk>"}, {"add_bos_token", true}, {"add_eos_token", false},
              {"legacy", true}, {"model_max_length", 4096}}.dump(2);
  const json py = run_python(python, tok_dir, files, dir / "reference", threads);

  std::printf("%-34s %9s %12s %14s %12s %12s\n", "", "seconds", "convs/s", "trained tok/s", "tokens", "trained");
  auto row = [](const std::string& name, double s, int64_t c, int64_t t, int64_t tr) {
    std::printf("%-34s %9.2f %12.0f %14.0f %12lld %12lld\n", name.c_str(), s, c / s, tr / s,
                static_cast<long long>(t), static_cast<long long>(tr));
  };
  row(transform ? "agenttune prepare_sft (+align)" : "agenttune prepare_sft", ours_s, convs, tokens, trained);
  std::printf("%-34s read %.2f s, transforms %.2f s, render + write %.2f s\n", "  of which", report.read_seconds,
              report.transform_seconds, report.render_seconds);
  const double py_s = py.at("seconds").get<double>();
  row("python reference (" + py.at("tokenizer").get<std::string>() + ")", py_s, py.at("conversations").get<int64_t>(),
      py.at("tokens").get<int64_t>(), py.at("trained_tokens").get<int64_t>());
  std::printf("speed-up: %.2fx\n", py_s / ours_s);
  if (!transform) {
    const bool same = py.at("tokens").get<int64_t>() == tokens && py.at("trained_tokens").get<int64_t>() == trained &&
                      py.at("conversations").get<int64_t>() == convs;
    std::printf("counts agree with the reference: %s\n", same ? "yes" : "NO");
    if (!same) return 1;
  }
  return 0;
}
