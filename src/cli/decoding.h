#pragma once
// What `generate` and `chat` share: the sampling flags, and printing tokens as text while they
// are produced.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "agenttune/chat/template.h"
#include "agenttune/io/hf_checkpoint.h"
#include "agenttune/model/generation.h"
#include "agenttune/model/llama.h"
#include "agenttune/model/llama_config.h"
#include "agenttune/tokenizer/tokenizer.h"

namespace agenttune::cli {

// --max-new-tokens, --temperature, --top-p, --stop-id, --seed.
void add_sampling_options(CLI::App* app, SamplingOptions& sampling, std::vector<int64_t>& stop_ids);

// --adapter DIR: a PEFT LoRA adapter folder (one `export --adapter-only` wrote, or peft's
// save_pretrained) to put on the model.
void add_adapter_option(CLI::App* app, std::string& adapter);
// Puts the adapter in `dir` on the model (nothing when `dir` is empty; io/peft_adapter.h refuses what
// we cannot compute as PEFT does) and switches the model to inference (no adapter dropout).
void apply_adapter_option(LlamaForCausalLM& model, const std::string& dir);
// The saved model a decoding command runs: --model's folder in --dtype (empty = the checkpoint's) on
// --device, with the --adapter folder (empty = none) applied over it, in eval mode.
LoadedModel load_decoding_model(const std::string& model_dir, const std::string& dtype, const std::string& device,
                                const std::string& adapter);

// The tokenizer a decoding command uses: --tokenizer when given, else the model folder (its
// byte-level tokenizer.json or its tokenizer.model, as Tokenizer::load picks); nullopt when the
// folder has neither.
std::optional<std::filesystem::path> decoding_tokenizer(const std::string& model_dir, const std::string& given);
// `stops` plus the model's end-of-sequence ids it lacks (config.json's eos_token_id list, e.g.
// Llama-3.1-Instruct's <|end_of_text|>, <|eom_id|>, <|eot_id|>): a template's end of turn is not the
// only way a reply ends, as transformers' generate stops at every one of them too.
std::vector<int64_t> with_eos_stops(std::vector<int64_t> stops, const std::vector<int64_t>& eos);

// The chat templates' names, comma-separated, for a --template help text (from the registry, so
// a template added there shows up in every command's help).
std::string template_choices();

// --device (auto | cpu | cuda | cuda:N; default auto: the GPU when there is one).
void add_device_option(CLI::App* app, std::string& device);
// The device named by --device, made current.
c10::Device decoding_device(const std::string& device);

// The chat template `name` ready to prompt the model in `model_dir`: its added tokens put into
// `tok`, and every id it inserts by itself (BOS, EOS, added tokens, stop ids) checked to be a row of
// the model's embedding. A model tuned without the template lacks those rows, and LibTorch's
// "index out of range" on the first turn would not say why: this throws naming the template, the
// token and the vocabulary size.
std::unique_ptr<ChatTemplate> template_for_model(const std::string& name, Tokenizer& tok, const LlamaConfig& model,
                                                 const std::string& model_dir);

// Streams text, not pieces: decodes everything so far and prints what is new, holding back while
// the tail is an incomplete UTF-8 sequence (byte-fallback tokens arrive one byte at a time).
class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::ostream& out = std::cout) : tok_(tok), out_(out) {}
  void operator()(int64_t id);
  // Everything streamed so far, as decoded text.
  std::string text() const { return tok_.decode(ids_); }

 private:
  const Tokenizer& tok_;
  std::ostream& out_;
  std::vector<int32_t> ids_;
  size_t printed_ = 0;
};

}  // namespace agenttune::cli
