#pragma once
// Shared by the SFT tests: the real Llama-2 tokenizer (skip when absent), the bundled samples,
// and a prepared folder read back as (tokens, mask) per document.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agenttune/chat/template.h"
#include "agenttune/data/sft_prepare.h"
#include "agenttune/data/token_shards.h"
#include "test_paths.h"

namespace agenttune::testing {

inline std::filesystem::path llama2_model() { return shared_fixture("llama2-tokenizer.model"); }

#define REQUIRE_TOKENIZER()                           \
  if (::agenttune::testing::llama2_model().empty())  \
  GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found"

inline std::filesystem::path sample(const std::string& name) {
  return source_dir() / "data" / "samples" / name;
}

inline std::filesystem::path write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

struct Doc {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  bool operator==(const Doc&) const = default;
};

inline std::vector<Doc> read_docs(const std::filesystem::path& dir) {
  auto d = TokenDataset::open(dir);
  std::vector<Doc> out;
  for (int64_t i = 0; i < d.num_documents(); ++i) {
    const int64_t n = d.document_length(i);
    std::vector<int64_t> ids(n);
    Doc doc;
    doc.mask.resize(n);
    d.read(i, 0, n, ids.data());
    d.read_mask(i, 0, n, doc.mask.data());
    doc.ids.assign(ids.begin(), ids.end());
    out.push_back(std::move(doc));
  }
  return out;
}

// The tokenizer exactly as prepare_sft sets it up for `tmpl`.
inline Tokenizer tokenizer_for(const ChatTemplate& tmpl) {
  Tokenizer tok = Tokenizer::load(llama2_model());
  prepare_tokenizer(tmpl, tok);
  return tok;
}

inline SftDatasetConfig dataset(std::string name, std::filesystem::path path, std::filesystem::path out,
                                DatasetFormat format = DatasetFormat::Auto) {
  SftDatasetConfig d;
  d.name = std::move(name);
  d.paths = {std::move(path)};
  d.format = format;
  d.output = std::move(out);
  return d;
}

inline SftPrepareConfig base_config(std::string tmpl) {
  SftPrepareConfig c;
  c.tokenizer = llama2_model();
  c.chat_template = std::move(tmpl);
  c.threads = 2;
  c.progress = false;
  return c;
}

}  // namespace agenttune::testing
