#pragma once
// Helpers for the prepare tests: input files in every supported form, reading a prepared corpus
// back, and the Python sentencepiece oracle (tests/data/py/sp_reference.py).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zlib.h>
#include <zstd.h>

#include <fstream>
#include <random>

#include "agenttune/data/prepare.h"
#include "agenttune/util/files.h"
#include "generated_docs.h"
#include "test_paths.h"

namespace agenttune::testing {

namespace fs = std::filesystem;
using DocIds = std::vector<std::vector<int64_t>>;

inline fs::path llama_tokenizer() { return shared_fixture("llama2-tokenizer.model"); }

#define REQUIRE_TOKENIZER()                                                                  \
  if (::agenttune::testing::llama_tokenizer().empty())                                       \
    GTEST_SKIP() << "../shared/fixtures/llama2-tokenizer.model not found";                   \
  if (!std::filesystem::exists(::agenttune::testing::venv_python()))                         \
  GTEST_SKIP() << "no .venv python oracle"

inline void write_plain(const fs::path& p, std::string_view s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

inline void write_gz(const fs::path& p, std::string_view s) {
  fs::create_directories(p.parent_path());
  gzFile g = gzopen(p.c_str(), "wb");
  ASSERT_TRUE(g != nullptr);
  ASSERT_EQ(gzwrite(g, s.data(), static_cast<unsigned>(s.size())), static_cast<int>(s.size()));
  gzclose(g);
}

inline void write_zst(const fs::path& p, std::string_view s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3);
  ASSERT_FALSE(ZSTD_isError(n));
  out.resize(n);
  write_plain(p, out);
}

inline std::string jsonl(const std::vector<std::string>& texts, const std::string& field = "text") {
  std::string out;
  for (const auto& t : texts) out += nlohmann::json{{"id", out.size()}, {field, t}}.dump() + "\n";
  return out;
}

inline PrepareOptions options(std::vector<std::string> inputs, const fs::path& out, int threads = 2) {
  PrepareOptions o;
  o.inputs = std::move(inputs);
  o.output_dir = out;
  o.tokenizer = llama_tokenizer();
  o.threads = threads;
  o.progress = false;
  return o;
}

inline DocIds all_documents(const TokenDataset& d) {
  DocIds out;
  for (int64_t i = 0; i < d.num_documents(); ++i) {
    out.emplace_back(d.document_length(i));
    d.read(i, 0, static_cast<int64_t>(out.back().size()), out.back().data());
  }
  return out;
}

// [BOS] + Python sentencepiece ids + [EOS] for each text.
inline DocIds python_ids(const std::vector<std::string>& texts, const fs::path& scratch) {
  write_plain(scratch / "oracle_in.json", nlohmann::json(texts).dump());
  std::string cmd = venv_python().string() + " " + (source_dir() / "tests/data/py/sp_reference.py").string() +
                    " " + llama_tokenizer().string() + " " + (scratch / "oracle_in.json").string() + " " +
                    (scratch / "oracle_out.json").string();
  std::string log;
  EXPECT_EQ(run_command(cmd, &log), 0) << log;
  return nlohmann::json::parse(read_text_file(scratch / "oracle_out.json")).get<DocIds>();
}

}  // namespace agenttune::testing
