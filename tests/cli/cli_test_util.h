#pragma once
// What the command-line tests share: where the binary is, and reading a run's losses back.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "synthetic_corpus.h"
#include "test_paths.h"

extern char** environ;

namespace agenttune::testing {

// Starts `cmd` through /bin/sh with exec, so the pid is the command's own and signals reach it.
inline pid_t spawn(const std::string& cmd) {
  pid_t pid = -1;
  std::string exec_cmd = "exec " + cmd;
  const char* argv[] = {"/bin/sh", "-c", exec_cmd.c_str(), nullptr};
  if (posix_spawn(&pid, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0) return -1;
  return pid;
}

// The exit code, or 128 + the signal that ended it, as shells report.
inline int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline bool wait_for(const std::filesystem::path& p, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (std::filesystem::exists(p)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// Starts the training command `cmd` and SIGKILLs it as soon as its step-`step` checkpoint under
// `checkpoints` is complete; a run that got to `last_step` first proves nothing and fails the test
// (callers check HasFatalFailure()).
inline void kill_after_checkpoint(const std::string& cmd, const std::filesystem::path& checkpoints, int step,
                                  int last_step, double timeout_s) {
  auto complete = [&](int s) { return checkpoints / ("step_" + std::string(8 - std::to_string(s).size(), '0') +
                                                     std::to_string(s)) / "COMPLETE"; };
  pid_t pid = spawn(cmd);
  ASSERT_TRUE(wait_for(complete(step), timeout_s)) << "no step-" << step << " checkpoint";
  ::kill(pid, SIGKILL);
  EXPECT_EQ(wait_exit(pid), 128 + SIGKILL);
  ASSERT_FALSE(std::filesystem::exists(complete(last_step)))
      << "the run finished before it was killed: the test proves nothing";
}

// torchrun launching N local ranks of the command that follows (Gloo on the CPU).
inline std::string torchrun(int n) {
  return (source_dir() / ".venv/bin/torchrun").string() + " --no-python --standalone --nproc-per-node " +
         std::to_string(n) + " ";
}

inline std::string agenttune_bin() {
  const char* b = std::getenv("AGENTTUNE_BIN");
  return b ? b : (binary_dir() / "agenttune").string();
}

// `[ENV] agenttune ARGS` with its exit code and stdout+stderr; `env` is "NAME=value ..." or empty.
struct Run {
  int rc;
  std::string out;
};
inline Run agenttune(const std::string& args, const std::string& env = "") {
  Run r;
  r.rc = run_command((env.empty() ? "" : env + " ") + agenttune_bin() + " " + args, &r.out);
  return r;
}

// A tiny model config for `init` (vocab 300, 2 layers of width 32): fast enough for any test.
inline constexpr const char* kTinyYaml = R"(model:
  vocab_size: 300
  hidden_size: 32
  intermediate_size: 64
  num_hidden_layers: 2
  num_attention_heads: 4
  num_key_value_heads: 2
seed: 3
)";

// `init`s a valid tiny model folder, dir/m, to break in one way per test.
inline std::filesystem::path make_tiny_model(const std::filesystem::path& dir) {
  std::ofstream(dir / "tiny.yaml") << kTinyYaml;
  auto r = agenttune("init --config " + (dir / "tiny.yaml").string() + " --out " + (dir / "m").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  return dir / "m";
}

// Exactly one error line, exit code 2, and every expected fragment in it.
inline void expect_clean_error(const Run& r, std::initializer_list<std::string> fragments) {
  EXPECT_EQ(r.rc, 2) << r.out;
  size_t n = 0;
  for (size_t pos = 0; (pos = r.out.find("] error ", pos)) != std::string::npos; ++pos) ++n;
  EXPECT_EQ(n, 1u) << r.out;
  for (const auto& f : fragments) EXPECT_NE(r.out.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.out;
}

// step -> loss from <run>/metrics.jsonl.
inline std::map<int64_t, double> run_losses(const std::filesystem::path& run) {
  std::map<int64_t, double> out;
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    out[j.at("step").get<int64_t>()] = j.at("loss").get<double>();
  }
  return out;
}

// Every row of <run>/metrics.jsonl, in order.
inline std::vector<nlohmann::json> metrics_rows(const std::filesystem::path& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// A tiny two-source pretraining run (10:1 code:text of synthetic shards) for tests that need a
// real `train` but not particular data: ROOT/code, ROOT/text and ROOT/train.yaml.
struct TinyRun {
  int64_t vocab = 4096, hidden = 64, ffn = 128, layers = 2, max_positions = 256;
  int64_t seq_len = 64, max_steps = 12, micro_batch = 2, global_batch = 8;
  int64_t code_docs = 200, text_docs = 40, max_doc_len = 300;
  std::string checkpoint = "{interval: 6, keep_last: 4}";
  std::string extra;  // more top-level YAML, e.g. "dist: {strategy: no_shard}\n"
};

inline std::filesystem::path write_tiny_run(const std::filesystem::path& root, const TinyRun& r) {
  make_synthetic_source(root / "code", r.code_docs, 1000, 1, 20, r.max_doc_len, r.vocab);
  make_synthetic_source(root / "text", r.text_docs, 3000 % r.vocab, 2, 20, r.max_doc_len, r.vocab);
  auto cfg = root / "train.yaml";
  std::ofstream(cfg) << "output_dir: run\nmodel:\n  shape: {vocab_size: " << r.vocab << ", hidden_size: " << r.hidden
                     << ", intermediate_size: " << r.ffn << ", num_hidden_layers: " << r.layers
                     << ",\n          num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: "
                     << r.max_positions << R"(}
data:
  sources:
    - {name: code, path: code, weight: 10}
    - {name: text, path: text, weight: 1}
  seq_len: )" << r.seq_len << "\ntrain:\n  max_steps: " << r.max_steps << "\n  micro_batch_size: " << r.micro_batch
                     << "\n  global_batch_sequences: " << r.global_batch
                     << "\n  lr: 1.0e-2\n  warmup_steps: 1\n  threads: 1\ncheckpoint: " << r.checkpoint
                     << "\nmetrics: {tensorboard: false}\n"
                     << r.extra;
  return cfg;
}

}  // namespace agenttune::testing
