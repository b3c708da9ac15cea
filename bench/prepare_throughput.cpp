// prepare throughput, side by side in one run on the same generated corpus:
//   agenttune prepare      prepare_corpus(): read, parse, tokenize, write shards
//   python reference       bench/prepare_reference.py: sentencepiece in N processes, writing a .bin
//                          (for a tokenizer.json: Hugging Face tokenizers' encode_batch_fast, N threads)
//   encoder ceilings       the texts already in memory, N threads, no I/O at all: agenttune::Tokenizer
//                          (its exact fast BPE, src/tokenizer/fast_bpe.h, or byte-level BPE,
//                          src/tokenizer/byte_level_bpe.h) and libsentencepiece (SentencePiece only)
// usage: bench_prepare_throughput --tokenizer M [--mb 200] [--threads N] [--dir D] [--python P]
//        (M: a SentencePiece .model, a tokenizer.json or a model folder)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "agenttune/data/prepare.h"
#include "agenttune/tokenizer/tokenizer.h"
#include "agenttune/util/files.h"
#include "bench_corpus.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Row {
  std::string name;
  double seconds = 0;
  int64_t tokens = 0;
};

std::vector<std::string> texts_of(const std::vector<fs::path>& files) {
  std::vector<std::string> texts;
  for (const auto& f : files) {
    std::string all = agenttune::read_text_file(f);
    for (size_t pos = 0, nl; pos < all.size(); pos = nl + 1) {
      nl = all.find('\n', pos);
      texts.push_back(nlohmann::json::parse(all.substr(pos, nl - pos)).at("text").get<std::string>());
    }
  }
  return texts;
}

// `encoder()` makes one thread's encoding function (text -> token count with BOS/EOS).
template <typename MakeEncoder>
Row ceiling(std::string name, const std::vector<std::string>& texts, int threads, MakeEncoder encoder) {
  std::atomic<size_t> next{0};
  std::atomic<int64_t> tokens{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      auto encode = encoder();
      int64_t mine = 0;
      for (size_t i; (i = next.fetch_add(16)) < texts.size();)
        for (size_t k = i; k < std::min(i + 16, texts.size()); ++k) mine += encode(texts[k]);
      tokens += mine;
    });
  for (auto& t : pool) t.join();
  return {std::move(name), since(t0), tokens.load()};
}

Row python_reference(const std::string& python, const agenttune::Tokenizer& tok, const std::vector<fs::path>& files,
                     const fs::path& out, int threads) {
  const fs::path& model = tok.model_path();
  const bool json = model.extension() == ".json";
  std::string cmd = python + " " AGENTTUNE_SOURCE_DIR "/bench/prepare_reference.py " +
                    (json ? "--tokenizer-json " + model.string() + " --bos " + std::to_string(tok.bos_id()) +
                                " --eos " + std::to_string(tok.eos_id())
                          : "--model " + model.string()) +
                    " --processes " + std::to_string(threads) + " --out " + out.string();
  for (const auto& f : files) cmd += " " + f.string();
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string text;
  char buf[4096];
  for (size_t n; p && (n = std::fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
  if (!p || ::pclose(p) != 0) {
    std::fprintf(stderr, "python reference failed: %s\n%s\n", cmd.c_str(), text.c_str());
    std::exit(1);
  }
  auto j = nlohmann::json::parse(text.substr(text.rfind('{')));
  return {json ? "tokenizers (" + std::to_string(threads) + " threads)" : "python reference (" + std::to_string(threads) + " procs)",
          j.at("seconds").get<double>(),
          j.at("tokens").get<int64_t>()};
}

}  // namespace

int main(int argc, char** argv) {
  fs::path model, dir = fs::temp_directory_path() / "agenttune_bench_prepare";
  double mb = 200;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string python = AGENTTUNE_SOURCE_DIR "/.venv/bin/python";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--tokenizer") model = v;
    else if (a == "--mb") mb = std::stod(v);
    else if (a == "--threads") threads = std::stoi(v);
    else if (a == "--dir") dir = v;
    else if (a == "--python") python = v;
    else return std::fprintf(stderr, "unknown option %s\n", a.c_str()), 2;
  }
  if (model.empty()) return std::fprintf(stderr, "usage: %s --tokenizer MODEL [--mb 200] [--threads N]\n", argv[0]), 2;

  const auto corpus = dir / "corpus";
  std::vector<fs::path> files;
  if (fs::exists(corpus / "done")) {
    for (const auto& e : fs::directory_iterator(corpus))
      if (e.path().extension() == ".jsonl") files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    fs::remove_all(corpus);
    files = agenttune::bench::write_corpus(corpus, static_cast<uint64_t>(mb * 1e6), 4);
    std::ofstream(corpus / "done") << "";
  }
  uint64_t bytes = 0;
  for (const auto& f : files) bytes += fs::file_size(f);
  std::printf("corpus: %.1f MB of JSONL in %zu files (%s); %d threads/processes\n", bytes / 1e6, files.size(),
              corpus.c_str(), threads);

  const auto tok = agenttune::Tokenizer::load(model);
  std::vector<Row> rows;
  {
    fs::remove_all(dir / "out");
    agenttune::PrepareOptions o;
    for (const auto& f : files) o.inputs.push_back(f.string());
    o.output_dir = dir / "out";
    o.tokenizer = model;
    o.threads = threads;
    o.progress = false;
    const auto t0 = Clock::now();
    auto r = agenttune::prepare_corpus(o);
    rows.push_back({"agenttune prepare", since(t0), r.manifest.tokens});
  }
  rows.push_back(python_reference(python, tok, files, dir / "reference.bin", threads));
  const auto texts = texts_of(files);
  const bool byte_level = tok.model_path().extension() == ".json";
  std::vector<agenttune::Tokenizer> reference;  // libsentencepiece; byte-level BPE has one encoder
  if (!byte_level) reference.push_back(agenttune::Tokenizer::load(model, /*fast_bpe=*/false));
  std::vector<const agenttune::Tokenizer*> encoders{&tok};
  for (const auto& t : reference) encoders.push_back(&t);
  for (const auto* t : encoders)
    rows.push_back(ceiling(t->uses_fast_bpe() ? "ceiling: agenttune::Tokenizer" : "ceiling: libsentencepiece", texts,
                           threads, [t] {
                             return [t, ids = std::vector<int32_t>()](const std::string& s) mutable {
                               ids.clear();
                               t->encode_into(s, ids, true, true);
                               return static_cast<int64_t>(ids.size());
                             };
                           }));

  const Row& ours = rows[0];
  std::printf("%-30s %9s %9s %10s %10s\n", "", "seconds", "MB/s", "Mtokens/s", "tokens");
  for (const auto& r : rows)
    std::printf("%-30s %9.2f %9.2f %10.3f %10lld\n", r.name.c_str(), r.seconds, bytes / 1e6 / r.seconds,
                r.tokens / 1e6 / r.seconds, static_cast<long long>(r.tokens));
  std::printf("agenttune / %s: %.2fx (goal >= %s)\n", byte_level ? "tokenizers" : "python reference",
              rows[1].seconds / ours.seconds, byte_level ? "1.0x" : "1.3x");
  std::printf("agenttune / encoder ceiling:  %.0f%% (goal >= 85%%)\n", 100 * rows[2].seconds / ours.seconds);
  for (const auto& r : rows)
    if (r.tokens != ours.tokens) std::printf("WARNING: %s counted other tokens: not the same work\n", r.name.c_str());
  return 0;
}
