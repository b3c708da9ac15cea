#pragma once
// `agenttune prepare --config FILE`: one or more raw corpora -> token shards, one folder each.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "agenttune/data/prepare.h"

namespace agenttune {

struct CorpusSpec {
  std::string name;
  std::vector<std::filesystem::path> inputs;  // files, folders or globs, relative to the config
  std::filesystem::path output;
  std::string text_field = "text";
};

struct PrepareConfig {
  std::filesystem::path tokenizer;
  std::vector<CorpusSpec> corpora;
  bool add_bos = true;
  bool add_eos = true;
  int64_t shard_tokens = 256LL << 20;
  int threads = 0;
  OnError on_error = OnError::Fail;

  void validate(const std::string& source) const;
};

template <class V>
void visit(V& v, CorpusSpec& c) {
  v("name", c.name);
  v("inputs", c.inputs);
  v("output", c.output);
  v("text_field", c.text_field);
}

template <class V>
void visit(V& v, PrepareConfig& c) {
  v("tokenizer", c.tokenizer);
  v("corpora", c.corpora);
  v("add_bos", c.add_bos);
  v("add_eos", c.add_eos);
  v("shard_tokens", c.shard_tokens);
  v("threads", c.threads);
  v("on_error", c.on_error);
}

}  // namespace agenttune
