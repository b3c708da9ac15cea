#include "test_paths.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>

namespace agenttune::testing {

std::filesystem::path source_dir() { return AGENTTUNE_SOURCE_DIR; }
std::filesystem::path binary_dir() { return AGENTTUNE_BINARY_DIR; }

std::filesystem::path shared_fixture(const std::string& name) {
  auto p = source_dir().parent_path() / "shared" / "fixtures" / name;
  return std::filesystem::exists(p) ? p : std::filesystem::path();
}

std::filesystem::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "scratch";
  for (auto& c : name)
    if (c == '/') c = '_';
  auto dir = binary_dir() / "test-scratch" / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::filesystem::path venv_python() { return source_dir() / ".venv" / "bin" / "python"; }

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf{};
  std::string out;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace agenttune::testing
