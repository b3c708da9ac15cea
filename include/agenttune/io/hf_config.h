#pragma once
// Hugging Face `config.json` <-> LlamaConfig, for model_type llama, qwen2 and qwen3 (written with
// their architectures: LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM). Reads both the
// transformers 4 spelling (rope_theta, rope_scaling, torch_dtype) and the 5.x one (rope_parameters,
// dtype), rope scaling default, linear or llama3; writes both, so transformers 4/5 and vLLM all read
// what we save. Anything else (YaRN, sliding windows, MLP biases) is an error naming the key.
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/model/llama_config.h"

namespace agenttune {

// `source` names the file in error messages.
LlamaConfig llama_config_from_json(const nlohmann::json& j, const std::string& source);
nlohmann::json llama_config_to_json(const LlamaConfig& c);

// j's eos_token_id: one id or a non-empty list of ids (config.json and generation_config.json write
// either); nullopt when the key is absent or null. Anything else is an error naming `source`.
std::optional<std::vector<int64_t>> eos_token_ids_from_json(const nlohmann::json& j, const std::string& source);

LlamaConfig read_hf_config(const std::filesystem::path& config_json);
void write_hf_config(const std::filesystem::path& config_json, const LlamaConfig& c);

}  // namespace agenttune
