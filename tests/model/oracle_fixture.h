#pragma once
// The transformers-made models of tests/oracle/make_models.py, and the PEFT LoRA references of
// tests/oracle/peft_lora.py on them, generated once per test process.
#include <filesystem>
#include <string>
#include <vector>

namespace agenttune::testing {

// Folder holding <case>/model and <case>/ref.safetensors; generates it on first use.
std::filesystem::path oracle_root();
std::vector<std::string> oracle_cases();

// Folder holding <variant>/ref.safetensors and variants.json; generates it on first use.
std::filesystem::path peft_lora_root();

}  // namespace agenttune::testing
