#pragma once
// Hugging Face `config.json` <-> LlamaConfig. Reads both the transformers 4 spelling
// (rope_theta, rope_scaling, torch_dtype) and the 5.x one (rope_parameters, dtype); writes both,
// so transformers 4/5 and vLLM all read what we save.
#include <filesystem>
#include <nlohmann/json_fwd.hpp>

#include "agenttune/model/llama_config.h"

namespace agenttune {

// `source` names the file in error messages.
LlamaConfig llama_config_from_json(const nlohmann::json& j, const std::string& source);
nlohmann::json llama_config_to_json(const LlamaConfig& c);

LlamaConfig read_hf_config(const std::filesystem::path& config_json);
void write_hf_config(const std::filesystem::path& config_json, const LlamaConfig& c);

}  // namespace agenttune
