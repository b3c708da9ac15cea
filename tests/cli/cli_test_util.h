#pragma once
// What the command-line tests share: where the binary is, and reading a run's losses back.
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
