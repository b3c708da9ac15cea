// Megatron-tokenized corpora as a training source, tested against files written by megatron-core's
// own IndexedDatasetBuilder (tests/megatron/py/megatron_oracle.py, run once per ctest as the
// oracle.make_megatron fixture): every document reads back as written, bad files are clear errors
// naming the file, and a run on a Megatron corpus trains exactly as on the same documents
// prepared by agenttune, including resume.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../cli/cli_test_util.h"
#include "agenttune/data/megatron_dataset.h"
#include "agenttune/data/source_dataset.h"
#include "agenttune/data/token_shards.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kSha(64, 'a');

fs::path files() { return testing::binary_dir() / "test-scratch/megatron_files"; }

std::vector<std::vector<int64_t>> expected_docs(const std::string& name) {
  return json::parse(read_text_file(files() / (name + ".json"))).get<std::vector<std::vector<int64_t>>>();
}

MixtureSource megatron_source(const fs::path& prefix, int64_t vocab) {
  MixtureSource s;
  s.name = "m";
  s.path = prefix;
  s.format = SourceFormat::Megatron;
  s.vocab_size = vocab;
  s.tokenizer_sha256 = kSha;
  return s;
}

void expect_error(const std::function<void()>& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& frag : fragments)
      EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << "missing '" << frag << "' in: " << e.what();
  }
}

TEST(MegatronDataset, EveryDocumentReadsBackAsMegatronWroteIt) {
  for (auto [name, vocab] : {std::pair<std::string, int64_t>{"u16", 32000}, {"i32", 70000}}) {
    auto docs = expected_docs(name);
    auto source = megatron_source(files() / name, vocab);
    auto data = open_source(source);
    ASSERT_EQ(data.num_documents(), static_cast<int64_t>(docs.size())) << name;
    int64_t tokens = 0;
    for (size_t d = 0; d < docs.size(); ++d) {
      const auto n = static_cast<int64_t>(docs[d].size());
      ASSERT_EQ(data.document_length(static_cast<int64_t>(d)), n) << name << " document " << d;
      std::vector<int64_t> got(static_cast<size_t>(n));
      if (n > 0) data.read(static_cast<int64_t>(d), 0, n, got.data());
      EXPECT_EQ(got, docs[d]) << name << " document " << d;
      tokens += n;
    }
    auto m = source_manifest(source);
    EXPECT_EQ(m.documents, static_cast<int64_t>(docs.size()));
    EXPECT_EQ(m.tokens, tokens);
    EXPECT_EQ(m.vocab_size, vocab);
    EXPECT_EQ(m.tokenizer_sha256, kSha);
    EXPECT_EQ(m.dtype, name == "u16" ? "uint16" : "uint32");
    // The stated fingerprint is checked against the tokenizer in use.
    expect_error([&] { open_source(source, std::string(64, 'b')); }, {name, "tokenizer sha256", kSha});
  }
}

// A copy of the u16 pair under `dir`, for breaking.
fs::path copy_pair(const fs::path& dir) {
  fs::create_directories(dir);
  fs::copy_file(files() / "u16.bin", dir / "c.bin", fs::copy_options::overwrite_existing);
  fs::copy_file(files() / "u16.idx", dir / "c.idx", fs::copy_options::overwrite_existing);
  return dir / "c";
}

void patch(const fs::path& file, size_t at, const std::string& bytes) {
  std::string s = read_text_file(file);
  s.replace(at, bytes.size(), bytes);
  write_file_atomic(file, s);
}

void truncate_by(const fs::path& file, size_t n) { fs::resize_file(file, fs::file_size(file) - n); }

template <class T>
std::string le(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof v);
}

TEST(MegatronDataset, BadFilesAreErrorsNamingTheFile) {
  auto root = testing::scratch_dir();
  auto read = [](const fs::path& prefix) { return [prefix] { read_megatron_index(prefix); }; };
  auto p = copy_pair(root / "header");
  patch(fs::path(p) += ".idx", 0, "XMIDIDX");
  expect_error(read(p), {"c.idx", "MMIDIDX"});
  p = copy_pair(root / "version");
  patch(fs::path(p) += ".idx", 9, le<uint64_t>(2));
  expect_error(read(p), {"c.idx", "version 2, expected 1"});
  p = copy_pair(root / "dtype");
  patch(fs::path(p) += ".idx", 17, le<uint8_t>(7));  // float32
  expect_error(read(p), {"c.idx", "dtype code 7"});
  expect_error(read(files() / "i64"), {"i64.idx", "dtype code 5"});
  p = copy_pair(root / "count");
  patch(fs::path(p) += ".idx", 18, le<uint64_t>(~uint64_t{0} / 3));  // an absurd sequence count
  expect_error(read(p), {"c.idx", "truncated"});
  p = copy_pair(root / "short_idx");
  truncate_by(fs::path(p) += ".idx", 8);
  expect_error(read(p), {"c.idx", "truncated"});
  p = copy_pair(root / "short_bin");
  truncate_by(fs::path(p) += ".bin", 2);
  expect_error(read(p), {"c.bin", "truncated"});
  p = copy_pair(root / "pointer");
  patch(fs::path(p) += ".idx", 34 + 4 * 2, le<int32_t>(1000000));  // the third sequence's length
  expect_error(read(p), {"c.idx", "sequence 3"});
  p = copy_pair(root / "marks");
  const auto idx = read_text_file(fs::path(p) += ".idx");
  patch(fs::path(p) += ".idx", idx.size() - 16, le<int64_t>(1 << 20));  // a mark beyond the sequences
  expect_error(read(p), {"c.idx", "document mark"});
  p = copy_pair(root / "missing");
  fs::remove(fs::path(p) += ".bin");
  expect_error(read(p), {"c.bin"});
}

// The same documents, once as Megatron wrote them and once prepared by agenttune, train to the
// same losses bit for bit; a Megatron run killed at step 3 and resumed gives them too.
TEST(MegatronSource, TrainsExactlyLikeThePreparedCorpusAndResumes) {
  auto root = testing::scratch_dir();
  const int64_t vocab = 4096;
  {
    fs::create_directories(root / "prepared");
    TokenShardWriter w(root / "prepared", "shard_00000", vocab);
    for (const auto& d : expected_docs("train")) {
      std::vector<int32_t> t(d.begin(), d.end());
      w.add_document(t);
    }
    auto e = w.finish();
    ShardManifest m;
    m.vocab_size = vocab;
    m.dtype = shard_dtype_for_vocab(vocab);
    m.tokenizer_sha256 = kSha;
    m.documents = e.documents;
    m.tokens = e.tokens;
    m.shards.push_back(e);
    m.write(root / "prepared/manifest.json");
  }
  std::ofstream(root / "train.yaml") << R"(output_dir: run
model:
  shape: {vocab_size: 4096, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
          num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128}
data:
  sources:
    - {name: corpus, path: )" << (root / "prepared").string()
                                      << R"(}
  seq_len: 64
  validation_fraction: 0.1
train: {max_steps: 6, micro_batch_size: 2, global_batch_sequences: 4, lr: 1.0e-2, warmup_steps: 1, threads: 1,
        eval_interval: 3, eval_batches: 1}
checkpoint: {interval: 3, keep_last: 2}
metrics: {tensorboard: false}
)";
  auto train = [&](const std::string& out, const std::string& extra) {
    return testing::agenttune("train --config " + (root / "train.yaml").string() + " --no-progress --set output_dir=" +
                              (root / out).string() + " " + extra);
  };
  const std::string megatron = " --set data.sources.0.format=megatron --set data.sources.0.path=" +
                               (files() / "train").string() + " --set data.sources.0.vocab_size=4096" +
                               " --set data.sources.0.tokenizer_sha256=" + kSha;
  auto a = train("prepared_run", "");
  ASSERT_EQ(a.rc, 0) << a.out;
  auto b = train("megatron_run", megatron);
  ASSERT_EQ(b.rc, 0) << b.out;
  auto c1 = train("megatron_resumed", megatron + " --exit-after-steps 3");
  ASSERT_EQ(c1.rc, 0) << c1.out;
  auto c2 = train("megatron_resumed", megatron + " --resume auto");
  ASSERT_EQ(c2.rc, 0) << c2.out;
  auto prepared = testing::run_losses(root / "prepared_run");
  ASSERT_EQ(prepared.size(), 6u);
  EXPECT_EQ(testing::run_losses(root / "megatron_run"), prepared);
  EXPECT_EQ(testing::run_losses(root / "megatron_resumed"), prepared);

  // The tokenizer's identity is the config's to state, and it is checked.
  auto no_vocab = train("bad1", " --set data.sources.0.format=megatron --set data.sources.0.path=" +
                                    (files() / "train").string() + " --set data.sources.0.tokenizer_sha256=" + kSha);
  EXPECT_EQ(no_vocab.rc, 2) << no_vocab.out;
  EXPECT_NE(no_vocab.out.find("format: megatron needs vocab_size"), std::string::npos) << no_vocab.out;
  auto too_big = train("bad2", megatron + " --set data.sources.0.vocab_size=5000");
  EXPECT_EQ(too_big.rc, 2) << too_big.out;
  EXPECT_NE(too_big.out.find("vocab_size 5000 exceeds the model's 4096"), std::string::npos) << too_big.out;
}

}  // namespace
}  // namespace agenttune
