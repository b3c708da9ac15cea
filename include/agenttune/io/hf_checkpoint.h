#pragma once
// Hugging Face model folders: config.json, generation_config.json, weights (safetensors sharded or
// not, or pytorch_model*.bin), tokenizer files. Meta's consolidated.*.pth folders load through the
// same entry point. Every load checks names, shapes and dtypes and names the file at fault.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/io/tensor_source.h"
#include "agenttune/model/llama.h"

namespace agenttune {

enum class WeightFormat { Safetensors, TorchBin, MetaPth };
std::string to_string(WeightFormat f);

// Which weights a folder holds (by the files present); throws if none.
WeightFormat detect_weight_format(const std::filesystem::path& dir);
std::unique_ptr<TensorSource> open_weights(const std::filesystem::path& dir, WeightFormat f,
                                           const LlamaConfig& config);
LlamaConfig read_model_config(const std::filesystem::path& dir, WeightFormat f);

// Copies every model parameter from `src` (HF names), converting dtype. A missing tensor or a
// shape that disagrees with the config is an error naming the file and the tensor; unexpected
// extra tensors (other than rotary inv_freq buffers) are reported with a warning.
void load_weights(LlamaForCausalLM& model, const TensorSource& src);
// What load_weights checks first: every parameter there with its shape (warns about unused ones).
void check_weights(LlamaForCausalLM& model, const TensorSource& src);

struct LoadOptions {
  std::optional<c10::ScalarType> dtype;  // override the checkpoint's dtype
  at::Device device = at::kCPU;
};

struct LoadedModel {
  LlamaForCausalLM model{nullptr};
  WeightFormat format = WeightFormat::Safetensors;
  std::vector<int64_t> eos_token_ids;  // from generation_config.json, else config.json
  double seconds = 0;
};

LoadedModel load_pretrained(const std::filesystem::path& dir, const LoadOptions& opts = {});

// Every id that ends generation for the model in `dir` whose config is `c`: generation_config.json's
// eos_token_id (one id or a list) when the folder has one, else c.eos_token_ids(), as transformers'
// generate takes them.
std::vector<int64_t> generation_eos_token_ids(const std::filesystem::path& dir, const LlamaConfig& c);

// The model's weights under HF names, in HF order, optionally cast.
NamedTensors hf_state_dict(LlamaForCausalLM& model, std::optional<c10::ScalarType> dtype = {});

struct SaveOptions {
  uint64_t max_shard_bytes = 5ull << 30;  // transformers' default shard size
  std::optional<c10::ScalarType> dtype;
  // A SentencePiece .model file, a tokenizer.json, or a folder holding tokenizer files to copy alongside.
  std::optional<std::filesystem::path> tokenizer_from;
};

// Writes config.json, generation_config.json, weights and tokenizer files into `dir`.
void save_pretrained(LlamaForCausalLM& model, const std::filesystem::path& dir,
                     const SaveOptions& opts = {});

// generation_config.json with the config's BOS/EOS/pad ids.
void write_generation_config(const std::filesystem::path& dir, const LlamaConfig& c);

// Copies tokenizer.model / tokenizer.json / tokenizer_config.json / special_tokens_map.json /
// added_tokens.json from a folder; a lone .model file plus a minimal tokenizer_config.json (and a
// tokenizer.json made from it); or a byte-level BPE tokenizer.json as it is, with the files beside it.
void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& dir);

}  // namespace agenttune
