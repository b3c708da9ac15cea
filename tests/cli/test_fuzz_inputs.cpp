// Hostile inputs through the real binary: seeded byte flips, truncations and type changes of
// configs, datasets, token shards, model folders and training checkpoints, and model shapes too
// large for the host's memory. Every case must end with exit 0 (the damage was harmless) or 2 (one
// clear error): never an uncaught exception (3), a signal or a hang (a per-case time limit). The seed fixes every mutation, so a failing case is
// reproduced by its name, which the report prints with the command and the output's last lines.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "agenttune/util/seeded.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using testing::Run;

constexpr uint64_t kSeed = 20261130;
constexpr int kCaseSeconds = 60;  // far above any case's run time: reaching it is a hang
constexpr int kWorkers = 2;       // CI has two cores

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
}

// ---------------------------------------------------------------------------------------------
// Mutations. Lines containing `output` are never byte-flipped, so a flip cannot point a write at
// a folder outside the case's own (their values are relative paths: truncating or retyping them
// keeps them inside).

enum class Mutation { Flip, Truncate, Retype, BadUtf8, BigTokenId, HugeShape };

const char* mutation_name(Mutation m) {
  switch (m) {
    case Mutation::Flip: return "flip";
    case Mutation::Truncate: return "truncate";
    case Mutation::Retype: return "retype";
    case Mutation::BadUtf8: return "bad-utf8";
    case Mutation::BigTokenId: return "big-token-id";
    case Mutation::HugeShape: return "huge-shape";
  }
  return "?";
}

bool in_protected_line(const std::string& s, size_t pos) {
  size_t begin = s.rfind('\n', pos == 0 ? 0 : pos - 1);
  begin = begin == std::string::npos ? 0 : begin + 1;
  size_t end = s.find('\n', pos);
  return s.substr(begin, end == std::string::npos ? std::string::npos : end - begin).find("output") !=
         std::string::npos;
}

// 1-3 bytes xor-ed with a random non-zero value. `text` files keep their protected lines.
std::string flip(std::string s, Rng& rng, bool text) {
  if (s.empty()) return s;
  for (int n = 1 + static_cast<int>(rng.below(3)); n > 0;) {
    const size_t pos = rng.below(s.size());
    if (text && in_protected_line(s, pos)) {
      if (rng.below(8) == 0) --n;  // give up on files that are mostly protected
      continue;
    }
    s[pos] = static_cast<char>(static_cast<unsigned char>(s[pos]) ^ (1 + rng.below(255)));
    --n;
  }
  return s;
}

std::string truncate(std::string s, Rng& rng) { return s.substr(0, rng.below(s.size() + 1)); }

// A JSON value replaced by one of another type, anywhere in the tree.
nlohmann::json other_value(Rng& rng) {
  static const std::vector<nlohmann::json> values = {
      "abc", -1, 0, 4294967296LL, 1.5, true, nullptr, nlohmann::json::array(), nlohmann::json::object(),
      nlohmann::json::array({1, "a"}), nlohmann::json{{"a", 1}}, "", 9223372036854775807LL};
  return rng.pick(values);
}

void collect_pointers(const nlohmann::json& j, const nlohmann::json::json_pointer& at,
                      std::vector<nlohmann::json::json_pointer>& out) {
  out.push_back(at);
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it) collect_pointers(it.value(), at / it.key(), out);
  if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) collect_pointers(j[i], at / i, out);
}

std::string retype_json(const std::string& s, Rng& rng) {
  auto j = nlohmann::json::parse(s, nullptr, false);
  if (j.is_discarded()) return flip(s, rng, true);
  std::vector<nlohmann::json::json_pointer> ptrs;
  collect_pointers(j, {}, ptrs);
  // The root itself only now and then: the nested values are where the checks are.
  const auto& p = ptrs.size() > 1 && rng.below(10) != 0 ? ptrs[1 + rng.below(ptrs.size() - 1)] : ptrs[0];
  if (p.empty()) j = other_value(rng);
  else j[p] = other_value(rng);
  return j.dump(1);
}

// YAML: the value of a random `key: value` line replaced by one of another type.
std::string retype_yaml(const std::string& s, Rng& rng) {
  static const std::vector<std::string> values = {
      "[1, 2]", "{a: 1}", "null", "~", "\"\"", "-1", "0", "1e400", "9223372036854775808", "true",
      "abc", ".nan", "-.inf", "{", "'unterminated", "*alias", "- item", "0x1F"};
  std::vector<std::pair<size_t, size_t>> spots;  // (offset of the value, its length)
  for (size_t begin = 0; begin < s.size();) {
    size_t end = s.find('\n', begin);
    if (end == std::string::npos) end = s.size();
    const std::string line = s.substr(begin, end - begin);
    const size_t colon = line.find(':');
    if (colon != std::string::npos && line.find('#') != 0) {
      const size_t v = colon + 1 < line.size() && line[colon + 1] == ' ' ? colon + 2 : colon + 1;
      spots.emplace_back(begin + v, line.size() - v);
    }
    begin = end + 1;
  }
  if (spots.empty()) return flip(s, rng, true);
  const auto [at, len] = rng.pick(spots);
  return s.substr(0, at) + rng.pick(values) + s.substr(at + len);
}

// Bytes that are not UTF-8 inside a value (never a protected line).
std::string bad_utf8(std::string s, Rng& rng) {
  static const std::vector<std::string> bytes = {"\xff", "\xc3\x28", "\xe2\x82", "\xed\xa0\x80", "\xf8\x88\x80\x80\x80"};
  for (int tries = 0; tries < 64 && !s.empty(); ++tries) {
    const size_t pos = rng.below(s.size());
    if (in_protected_line(s, pos) || s[pos] == '\n') continue;
    return s.insert(pos, rng.pick(bytes));
  }
  return s;
}

// A uint16 token of a .bin set to an id past every vocabulary in these tests.
std::string big_token_id(std::string s, Rng& rng) {
  if (s.size() < 2) return s;
  const size_t at = rng.below(s.size() / 2) * 2;
  const uint16_t id = static_cast<uint16_t>(40000 + rng.below(25000));
  s[at] = static_cast<char>(id & 0xff);
  s[at + 1] = static_cast<char>(id >> 8);
  return s;
}

std::string mutate(const std::string& s, Mutation m, bool json, bool text, Rng& rng) {
  switch (m) {
    case Mutation::Flip: return flip(s, rng, text);
    case Mutation::Truncate: return truncate(s, rng);
    case Mutation::Retype: return json ? retype_json(s, rng) : retype_yaml(s, rng);
    case Mutation::BadUtf8: return bad_utf8(s, rng);
    case Mutation::BigTokenId: return big_token_id(s, rng);
    case Mutation::HugeShape: return s;  // made by CaseMaker::huge_shapes, not by damaging bytes
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// The valid inputs every case starts from, made once.

std::string prepare_yaml(const fs::path& tokenizer, const fs::path& corpus) {
  return "tokenizer: " + tokenizer.string() + "\ncorpora:\n  - name: text\n    inputs: [" + corpus.string() +
         "]\n    text_field: text\n    output: out\nadd_bos: true\nadd_eos: true\nshard_tokens: 2000\nthreads: 1\n"
         "on_error: fail\n";
}

std::string sft_yaml(const fs::path& tokenizer, const fs::path& dataset) {
  return "tokenizer: " + tokenizer.string() +
         "\ntemplate: agentlm\nmax_seq_len: 256\noverlength: truncate\nseed: 0\nthreads: 1\nprogress: false\n"
         "datasets:\n  - name: chat\n    paths: [" + dataset.string() +
         "]\n    format: sharegpt\n    output: out\n    upsample: 1.0\n";
}

std::string train_yaml(const fs::path& source, const fs::path& tokenizer, int64_t steps) {
  return "output_dir: run\nmodel:\n  shape: {vocab_size: 32000, hidden_size: 16, intermediate_size: 32, "
         "num_hidden_layers: 1,\n          num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64}\n"
         "data:\n  sources:\n    - {name: text, path: " + source.string() + ", weight: 1}\n  seq_len: 32\n"
         "  tokenizer: " + tokenizer.string() + "\ntrain:\n  max_steps: " + std::to_string(steps) +
         "\n  micro_batch_size: 2\n  global_batch_sequences: 2\n  lr: 1.0e-3\n  threads: 1\n"
         "checkpoint: {interval: 1, keep_last: 3}\nmetrics: {tensorboard: false}\n";
}

std::string corpus_jsonl() {
  std::string out;
  for (int i = 0; i < 24; ++i)
    out += nlohmann::json{{"id", i}, {"text", "Document " + std::to_string(i) + ": the quick brown fox " +
                                                  std::string(static_cast<size_t>(i % 5), 'x') + " jumps."}}
               .dump() + "\n";
  return out;
}

struct Base {
  fs::path root, tokenizer, corpus, sharegpt, model, shards, sft_shards, run;
};

// `agenttune ARGS` run in `cwd` under the per-case time limit (timeout exits 124 when it is hit).
Run run(const fs::path& cwd, const std::string& args) {
  Run r;
  r.rc = testing::run_command("cd " + cwd.string() + " && timeout -k 5 " + std::to_string(kCaseSeconds) + " " +
                                  testing::agenttune_bin() + " " + args,
                              &r.out);
  return r;
}

// Built once: a tokenized corpus, an SFT corpus, a tiny model folder and a run with checkpoints.
const Base& base() {
  static const Base b = [] {
    Base b;
    b.root = testing::scratch_dir();
    b.tokenizer = testing::shared_fixture("llama2-tokenizer.model");
    b.corpus = b.root / "corpus.jsonl";
    write_bytes(b.corpus, corpus_jsonl());
    b.sharegpt = testing::source_dir() / "data/samples/sharegpt.json";
    b.model = testing::make_tiny_model(b.root);
    write_bytes(b.root / "prep/prepare.yaml", prepare_yaml(b.tokenizer, "../corpus.jsonl"));
    auto r = run(b.root / "prep", "prepare --config prepare.yaml --no-progress");
    EXPECT_EQ(r.rc, 0) << r.out;
    b.shards = b.root / "prep/out";
    write_bytes(b.root / "sft/prepare.yaml", sft_yaml(b.tokenizer, b.sharegpt));
    r = run(b.root / "sft", "prepare --config prepare.yaml");
    EXPECT_EQ(r.rc, 0) << r.out;
    b.sft_shards = b.root / "sft/out";
    write_bytes(b.root / "train/train.yaml", train_yaml(b.shards, b.tokenizer, 2));
    r = run(b.root / "train", "train --config train.yaml --no-progress");
    EXPECT_EQ(r.rc, 0) << r.out;
    b.run = b.root / "train";
    return b;
  }();
  return b;
}

// ---------------------------------------------------------------------------------------------
// Cases: a category, a file to damage (copied into the case's folder first), how, and the command.

struct Case {
  std::string category, name;
  fs::path dir;          // the case's own folder (cwd of the command)
  std::string command;   // agenttune arguments
};

struct Outcome {
  Case c;
  Run r;
};

// Copies `from` (a file or folder) to `to`, damages `file` (relative to `to`) with `m`.
void damage(const fs::path& from, const fs::path& to, const fs::path& file, Mutation m, Rng& rng) {
  fs::create_directories(to.parent_path());
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  const fs::path target = fs::is_directory(to) ? to / file : to;
  const std::string ext = target.extension().string();
  const bool json = ext == ".json" || ext == ".jsonl";
  const bool text = json || ext == ".yaml";
  write_bytes(target, mutate(read_bytes(target), m, json && ext != ".jsonl", text, rng));
}

// For a JSONL file: Retype works on one record rather than on the file as a whole.
void damage_jsonl(const fs::path& file, Mutation m, Rng& rng) {
  if (m != Mutation::Retype) return write_bytes(file, mutate(read_bytes(file), m, false, true, rng));
  std::vector<std::string> lines;
  std::istringstream in(read_bytes(file));
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  auto& line = lines[rng.below(lines.size())];
  line = retype_json(line, rng);
  line.erase(std::remove(line.begin(), line.end(), '\n'), line.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  write_bytes(file, out);
}

class CaseMaker {
 public:
  explicit CaseMaker(const Base& b) : b_(b), root_(b.root / "cases") {}

  // Damaged prepare, SFT prepare and train configs.
  void configs(int n) {
    const std::vector<Mutation> ms = {Mutation::Flip, Mutation::Truncate, Mutation::Retype, Mutation::BadUtf8};
    for (int i = 0; i < n; ++i) {
      auto [dir, rng, m] = next("config", ms);
      const int kind = i % 3;
      // Inputs named relative to the case's folder: a flipped byte cannot turn them into a big
      // folder elsewhere ("/work,..." would read all of /work).
      fs::copy_file(b_.corpus, dir / "corpus.jsonl");
      fs::copy_file(b_.sharegpt, dir / "chat.json");
      std::string text = kind == 0   ? prepare_yaml(b_.tokenizer, "corpus.jsonl")
                         : kind == 1 ? sft_yaml(b_.tokenizer, "chat.json")
                                     : train_yaml(b_.shards, b_.tokenizer, 1);
      write_bytes(dir / "c.yaml", mutate(text, m, false, true, rng));
      add("config", m, dir, kind == 2 ? "train --config c.yaml --no-progress" : "prepare --config c.yaml --no-progress");
      // inspect reads the same files another way: a third of the prepare configs go through it.
      if (kind == 1 && i % 2 == 1) cases_.back().command = "inspect --config c.yaml --plain --samples 1";
    }
  }

  // Damaged pretraining JSONL and ShareGPT datasets, prepared.
  void datasets(int n) {
    const std::vector<Mutation> ms = {Mutation::Flip, Mutation::Truncate, Mutation::Retype, Mutation::BadUtf8};
    for (int i = 0; i < n; ++i) {
      auto [dir, rng, m] = next("dataset", ms);
      const bool sft = i % 2 == 1;
      const fs::path data = dir / (sft ? "chat.json" : "corpus.jsonl");
      fs::copy_file(sft ? b_.sharegpt : b_.corpus, data);
      if (sft) write_bytes(data, mutate(read_bytes(data), m, true, true, rng));
      else damage_jsonl(data, m, rng);
      write_bytes(dir / "c.yaml", sft ? sft_yaml(b_.tokenizer, data) : prepare_yaml(b_.tokenizer, data));
      add("dataset", m, dir, "prepare --config c.yaml --no-progress");
    }
  }

  // Damaged token shards (pretraining and SFT), trained on.
  void shards(int n) {
    const std::vector<Mutation> ms = {Mutation::Flip, Mutation::Truncate, Mutation::Retype, Mutation::BigTokenId};
    for (int i = 0; i < n; ++i) {
      auto [dir, rng, m] = next("shards", ms);
      const bool sft = i % 3 == 2;
      std::vector<std::string> files = {"manifest.json", "shard_00000.bin", "shard_00000.idx"};
      if (sft) files.emplace_back("shard_00000.mask");
      std::string file = m == Mutation::Retype ? "manifest.json" : rng.pick(files);
      if (m == Mutation::BigTokenId) file = "shard_00000.bin";
      damage(sft ? b_.sft_shards : b_.shards, dir / "data", file, m, rng);
      write_bytes(dir / "c.yaml", train_yaml(dir / "data", b_.tokenizer, 1));
      add("shards", m, dir, "train --config c.yaml --no-progress", file);
    }
  }

  // Damaged model folders, loaded by info and generate.
  void models(int n) {
    const std::vector<Mutation> ms = {Mutation::Flip, Mutation::Truncate, Mutation::Retype};
    for (int i = 0; i < n; ++i) {
      auto [dir, rng, m] = next("model", ms);
      const std::vector<std::string> files = {"config.json", "model.safetensors", "generation_config.json"};
      std::string file = m == Mutation::Retype ? (rng.below(4) == 0 ? "generation_config.json" : "config.json")
                                               : rng.pick(files);
      damage(b_.model, dir / "m", file, m, rng);
      add("model", m, dir,
          i % 2 == 0 ? "info --model m" : "generate --model m --prompt-ids 1,5,9 --max-new-tokens 1 --json", file);
    }
  }

  // Damaged training checkpoints, resumed.
  void checkpoints(int n) {
    const std::vector<Mutation> ms = {Mutation::Flip, Mutation::Truncate, Mutation::Retype};
    for (int i = 0; i < n; ++i) {
      auto [dir, rng, m] = next("checkpoint", ms);
      const std::vector<std::string> files = {"checkpoints/step_00000002/meta.json",
                                              "checkpoints/step_00000002/rank_00000.safetensors",
                                              "checkpoints/latest"};
      std::string file = m == Mutation::Retype ? files[0] : rng.pick(files);
      damage(b_.run / "run", dir / "run", file, m, rng);
      write_bytes(dir / "c.yaml", train_yaml(b_.shards, b_.tokenizer, 3));
      add("checkpoint", m, dir, "train --config c.yaml --no-progress --resume auto", file);
    }
  }

  // Shapes past the host's memory (up to products past int64), in a model folder's config.json
  // (generate loads it), a fresh run's model.shape (train) and an init config, every shape with
  // every command: each must be refused before anything is allocated, so a case takes no memory
  // and no time.
  using Shape = std::vector<std::pair<std::string, int64_t>>;

  // `yaml` with the first `key: <digits>` of each of `shape`'s keys given its value.
  static std::string with_values(std::string yaml, const Shape& shape) {
    for (const auto& [key, value] : shape) {
      const size_t at = yaml.find(key + ": ") + key.size() + 2;
      yaml.replace(at, yaml.find_first_not_of("0123456789", at) - at, std::to_string(value));
    }
    return yaml;
  }

  void huge_shapes(int n) {
    static const std::vector<Shape> shapes = {
        {{"vocab_size", 1000000000}, {"hidden_size", 1000000}},
        {{"intermediate_size", 1000000000000LL}},
        {{"num_hidden_layers", 1000000000}},
        {{"vocab_size", 9223372036854775807LL}},
        {{"hidden_size", 4000000000LL}, {"num_hidden_layers", 4000000}},
    };
    for (int i = 0; i < n; ++i) {
      auto [dir, rng, m] = next("huge-shape", {Mutation::HugeShape});
      const Shape& shape = shapes[static_cast<size_t>(i) % shapes.size()];
      const int kind = i % 3;
      std::string command;
      if (kind == 0) {
        nlohmann::json cfg = nlohmann::json::parse(read_bytes(b_.model / "config.json"));
        for (const auto& [key, value] : shape) cfg[key] = value;
        cfg["head_dim"] = cfg["hidden_size"].get<int64_t>() / cfg["num_attention_heads"].get<int64_t>();
        fs::copy(b_.model, dir / "m", fs::copy_options::recursive);
        write_bytes(dir / "m/config.json", cfg.dump(1));
        command = "generate --model m --prompt-ids 1,5,9 --max-new-tokens 1";
      } else if (kind == 1) {
        write_bytes(dir / "c.yaml", with_values(testing::kTinyYaml, shape));
        command = "init --config c.yaml --out m";
      } else {
        write_bytes(dir / "c.yaml", with_values(train_yaml(b_.shards, b_.tokenizer, 1), shape));
        command = "train --config c.yaml --no-progress";
      }
      add("huge-shape", m, dir, command, shape.front().first);
    }
  }

  const std::vector<Case>& cases() const { return cases_; }

 private:
  struct Next {
    fs::path dir;
    Rng rng;
    Mutation m;
  };
  Next next(const std::string& category, const std::vector<Mutation>& ms) {
    const auto index = cases_.size();
    Rng rng(splitmix64(kSeed ^ splitmix64(index)));
    const Mutation m = ms[rng.below(ms.size())];
    auto dir = root_ / (category + "_" + std::to_string(index));
    fs::create_directories(dir);
    return {dir, rng, m};
  }
  void add(const std::string& category, Mutation m, const fs::path& dir, const std::string& cmd,
           const std::string& file = "") {
    cases_.push_back({category, dir.filename().string() + " " + mutation_name(m) + (file.empty() ? "" : " " + file),
                      dir, cmd});
  }

  const Base& b_;
  fs::path root_;
  std::vector<Case> cases_;
};

std::vector<Outcome> run_all(const std::vector<Case>& cases) {
  std::vector<Outcome> out(cases.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < cases.size();) out[i] = {cases[i], run(cases[i].dir, cases[i].command)};
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < kWorkers; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  return out;
}

std::string tail(const std::string& s, size_t lines) {
  size_t pos = s.size();
  for (size_t n = 0; n <= lines && pos != std::string::npos && pos > 0; ++n) pos = s.rfind('\n', pos - 1);
  return pos == std::string::npos ? s : s.substr(pos + 1);
}

TEST(FuzzInputs, EveryDamagedInputEndsWithExit0Or2) {
  if (testing::shared_fixture("llama2-tokenizer.model").empty())
    GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";
  const Base& b = base();
  ASSERT_TRUE(fs::exists(b.run / "run/checkpoints/step_00000002/meta.json"));
  CaseMaker make(b);
  make.configs(54);
  make.datasets(40);
  make.shards(45);
  make.models(40);
  make.checkpoints(30);
  make.huge_shapes(15);
  const auto outcomes = run_all(make.cases());

  std::map<std::string, std::map<std::string, int>> table;  // category -> exit -> count
  std::vector<const Outcome*> bad;
  for (const auto& o : outcomes) {
    const bool hang = o.r.rc == 124 || o.r.rc == 137;
    const bool ok = o.r.rc == 0 || o.r.rc == 2;
    ++table[o.c.category][hang ? "hang" : ok ? "exit " + std::to_string(o.r.rc) : "other"];
    if (!ok) bad.push_back(&o);
  }
  std::cout << "fuzz (seed " << kSeed << "), " << outcomes.size() << " cases:\n";
  for (const auto& [category, counts] : table) {
    int total = 0;
    std::string line;
    for (const auto& [what, n] : counts) total += n, line += "  " + what + ": " + std::to_string(n);
    std::cout << "  " << category << ": " << total << " cases;" << line << "\n";
  }
  for (const auto* o : bad)
    ADD_FAILURE() << o->c.name << ": exit " << o->r.rc << " from `agenttune " << o->c.command << "` in "
                  << o->c.dir.string() << "\n" << tail(o->r.out, 6);
}

}  // namespace
}  // namespace agenttune
