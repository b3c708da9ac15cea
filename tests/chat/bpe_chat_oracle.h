#pragma once
// tests/chat/py/bpe_chat_oracle.py run on a list of cases (its header documents their keys and the
// answer): transformers' apply_chat_template with a published template and a real tokenizer.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "test_paths.h"

namespace agenttune::testing {

// The oracle's output; {"cases": []} when it failed, with the failure reported. Its files go to
// `dir` (scratch_dir() empties the test's folder: a test that keeps files there passes a subfolder).
inline nlohmann::json run_bpe_chat_oracle(const nlohmann::json& cases, std::filesystem::path dir = {}) {
  if (dir.empty()) dir = scratch_dir();
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "bpe_in.json") << nlohmann::json{{"cases", cases}}.dump();
  const std::string cmd = venv_python().string() + " " + (source_dir() / "tests/chat/py/bpe_chat_oracle.py").string() +
                          " " + (dir / "bpe_in.json").string() + " " + (dir / "bpe_out.json").string();
  std::string log;
  if (run_command(cmd, &log) != 0) {
    ADD_FAILURE() << log;
    return nlohmann::json{{"cases", nlohmann::json::array()}};
  }
  return nlohmann::json::parse(std::ifstream(dir / "bpe_out.json"));
}

}  // namespace agenttune::testing
