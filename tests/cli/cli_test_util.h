#pragma once
// What the command-line tests share: where the binary is, and reading a run's losses back.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "test_paths.h"

namespace agenttune::testing {

inline std::string agenttune_bin() {
  const char* b = std::getenv("AGENTTUNE_BIN");
  return b ? b : (binary_dir() / "agenttune").string();
}

// `agenttune ARGS` with its exit code and stdout+stderr.
struct Run {
  int rc;
  std::string out;
};
inline Run agenttune(const std::string& args) {
  Run r;
  r.rc = run_command(agenttune_bin() + " " + args, &r.out);
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

}  // namespace agenttune::testing
