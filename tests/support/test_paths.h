#pragma once
// Where tests find things: the source tree (data/, configs/), the build tree, the shared fixtures
// beside the checkout, and a fresh scratch directory per test.
#include <filesystem>
#include <string>

namespace agenttune::testing {

std::filesystem::path source_dir();
std::filesystem::path binary_dir();
// ../shared/fixtures/<name>; empty when absent (tests then GTEST_SKIP with a message).
std::filesystem::path shared_fixture(const std::string& name);
// A new empty directory under the build tree, unique to the running test.
std::filesystem::path scratch_dir();
// The python interpreter of the project's .venv (the test oracle).
std::filesystem::path venv_python();
// Runs a shell command, returns its exit code; stdout+stderr go to `output` when given.
int run_command(const std::string& cmd, std::string* output = nullptr);

}  // namespace agenttune::testing
