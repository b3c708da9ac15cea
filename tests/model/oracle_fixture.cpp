#include "oracle_fixture.h"

#include <gtest/gtest.h>

#include <mutex>
#include <nlohmann/json.hpp>

#include "agenttune/util/files.h"
#include "test_paths.h"

namespace agenttune::testing {

std::filesystem::path oracle_root() {
  static std::once_flag once;
  static std::filesystem::path root = binary_dir() / "test-scratch" / "oracle_models";
  std::call_once(once, [] {
    // ctest makes the fixtures once (oracle.make_models, a FIXTURES_SETUP test); a test binary run
    // by hand makes them itself when they are missing or older than the script.
    auto script = source_dir() / "tests/oracle/make_models.py";
    auto stamp = root / "cases.json";
    namespace fs = std::filesystem;
    if (fs::exists(stamp) && fs::last_write_time(stamp) >= fs::last_write_time(script)) return;
    auto tmp = root.string() + ".tmp";
    fs::remove_all(tmp);
    std::string out;
    int rc = run_command(venv_python().string() + " " + script.string() + " " + tmp, &out);
    if (rc != 0) throw std::runtime_error("make_models.py failed:\n" + out);
    fs::remove_all(root);
    fs::rename(tmp, root);
  });
  return root;
}

std::vector<std::string> oracle_cases() {
  auto j = nlohmann::json::parse(read_text_file(oracle_root() / "cases.json"));
  std::vector<std::string> names;
  for (auto& [k, v] : j.items()) names.push_back(k);
  return names;
}

}  // namespace agenttune::testing
