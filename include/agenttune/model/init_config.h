#pragma once
// `agenttune init --config FILE --out DIR`: a freshly initialised model (and optionally a copy of
// its tokenizer) written as a Hugging Face checkpoint directory.
#include <cstdint>
#include <filesystem>
#include <string>

#include "agenttune/model/llama_config.h"

namespace agenttune {

struct InitConfig {
  LlamaConfig model;
  uint64_t seed = 0;
  // Tokenizer files copied into the output dir (a SentencePiece .model, a byte-level BPE
  // tokenizer.json or a folder; copy_tokenizer_files); empty = none. Resolved against the config
  // file's folder by the reader, so it is absolute (or empty) after loading.
  std::filesystem::path tokenizer;

  void validate(const std::string& source) const { model.validate(source); }
};

template <class V>
void visit(V& v, InitConfig& c) {
  v.section("model", c.model);
  v("seed", c.seed);
  v("tokenizer", c.tokenizer);
}

}  // namespace agenttune
