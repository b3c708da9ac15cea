#include "oracle_fixture.h"

#include <gtest/gtest.h>

#include <mutex>
#include <nlohmann/json.hpp>

#include "agenttune/util/files.h"
#include "test_paths.h"

namespace agenttune::testing {

namespace {

namespace fs = std::filesystem;

// ctest makes the fixtures once (oracle.make_models, oracle.peft_lora: FIXTURES_SETUP tests); a
// test binary run by hand makes `root` itself (`scripts[0] INPUTS root`) when its `stamp` file is
// missing or older than any of the scripts it comes from.
void generate_when_stale(const fs::path& root, const std::string& stamp, const std::vector<std::string>& scripts,
                         const std::string& inputs) {
  bool fresh = fs::exists(root / stamp);
  for (const auto& s : scripts)
    fresh = fresh && fs::last_write_time(root / stamp) >= fs::last_write_time(source_dir() / "tests/oracle" / s);
  if (fresh) return;
  auto tmp = root.string() + ".tmp";
  fs::remove_all(tmp);
  std::string out;
  const auto script = source_dir() / "tests/oracle" / scripts.front();
  int rc = run_command(venv_python().string() + " " + script.string() + " " + inputs + " " + tmp, &out);
  if (rc != 0) throw std::runtime_error(scripts.front() + " failed:\n" + out);
  fs::remove_all(root);
  fs::rename(tmp, root);
}

}  // namespace

fs::path oracle_root() {
  static std::once_flag once;
  static fs::path root = binary_dir() / "test-scratch" / "oracle_models";
  std::call_once(once, [] { generate_when_stale(root, "cases.json", {"make_models.py"}, ""); });
  return root;
}

std::vector<std::string> oracle_cases() {
  auto j = nlohmann::json::parse(read_text_file(oracle_root() / "cases.json"));
  std::vector<std::string> names;
  for (auto& [k, v] : j.items()) names.push_back(k);
  return names;
}

fs::path peft_lora_root() {
  static std::once_flag once;
  static fs::path root = binary_dir() / "test-scratch" / "peft_lora";
  std::call_once(once, [] {
    const auto models = oracle_root();
    generate_when_stale(root, "variants.json", {"peft_lora.py", "peft_init.py", "make_models.py"}, models.string());
  });
  return root;
}

}  // namespace agenttune::testing
