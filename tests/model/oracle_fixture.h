#pragma once
// The transformers-made models of tests/oracle/make_models.py, generated once per test process.
#include <filesystem>
#include <string>
#include <vector>

namespace agenttune::testing {

// Folder holding <case>/model and <case>/ref.safetensors; generates it on first use.
std::filesystem::path oracle_root();
std::vector<std::string> oracle_cases();

}  // namespace agenttune::testing
