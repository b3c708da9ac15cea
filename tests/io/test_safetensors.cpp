#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "agenttune/io/safetensors.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "io_test_util.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;
namespace fs = std::filesystem;

std::string read_bytes(const fs::path& p) { return read_text_file(p); }

uint64_t safetensors_elem(const std::string& tag) { return tag == "F32" ? 4 : 2; }

void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

// A file with a hand-written header and `data_bytes` zero bytes of data.
fs::path craft(const fs::path& dir, const std::string& header, size_t data_bytes) {
  std::string s(8, '\0');
  uint64_t n = header.size();
  std::memcpy(s.data(), &n, 8);
  s += header + std::string(data_bytes, '\0');
  fs::path p = dir / "crafted.safetensors";
  write_bytes(p, s);
  return p;
}

// Runs `f`, expecting an agenttune::Error whose message contains every one of `needles`.
template <typename F>
void expect_error(F f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected agenttune::Error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
        << "message lacks '" << n << "': " << e.what();
  }
}

TEST(Safetensors, RoundTripIsByteExact) {
  auto dir = scratch_dir();
  auto tensors = oracle_tensors();
  tensors.emplace_back("e.transposed", expected(6, {4, 3}, at::kBFloat16).t());  // non-contiguous
  write_safetensors(dir / "x.safetensors", tensors, {{"note", "hi"}});
  auto f = SafetensorsFile::open(dir / "x.safetensors");
  ASSERT_EQ(f.entries().size(), tensors.size());
  for (const auto& [name, t] : tensors) EXPECT_TRUE(same(f.tensor(name), t)) << name;
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hi");
  // Header padded to 8 bytes, so every tensor is aligned to its element size.
  std::string raw = read_bytes(dir / "x.safetensors");
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw[8 + n - 1] == ' ' || raw[8 + n - 1] == '}', true);
  for (const auto& e : f.entries())
    EXPECT_EQ(e.begin % safetensors_elem(e.dtype_tag), 0u) << e.name;
  EXPECT_FALSE(fs::exists(dir / ("x.safetensors.tmp." + std::to_string(::getpid()))));
}

TEST(Safetensors, TensorIsAZeroCopyViewThatOutlivesTheFile) {
  auto dir = scratch_dir();
  write_safetensors(dir / "x.safetensors", oracle_tensors());
  at::Tensor t;
  {
    auto f = SafetensorsFile::open(dir / "x.safetensors");
    t = f.tensor("a.f32");
    EXPECT_EQ(t.data_ptr(), f.tensor("a.f32").data_ptr());  // both views of the one mapping
  }
  fs::remove(dir / "x.safetensors");  // the mapping, not the path, keeps the bytes
  EXPECT_TRUE(same(t, expected(1, {3, 5}, at::kFloat)));
}

TEST(Safetensors, ReadsFileWrittenByPythonSafetensors) {
  auto dir = scratch_dir();
  oracle("write_safetensors", dir / "py.safetensors");
  auto f = SafetensorsFile::open(dir / "py.safetensors");
  EXPECT_EQ(f.metadata().at("origin"), "python");
  for (const auto& s : oracle_specs())
    EXPECT_TRUE(same(f.tensor(s.name), expected(s.k, s.shape, s.dtype))) << s.name;
}

TEST(Safetensors, PythonSafetensorsReadsOurFile) {
  auto dir = scratch_dir();
  write_safetensors(dir / "ours.safetensors", oracle_tensors());
  oracle("check_safetensors", dir / "ours.safetensors");
}

TEST(Safetensors, ShardedWriteSplitsBySizeAndWritesIndex) {
  auto dir = scratch_dir();
  NamedTensors tensors;
  for (int i = 0; i < 5; ++i)
    tensors.emplace_back("w" + std::to_string(i), expected(i, {4, 4}, at::kFloat));  // 64 bytes
  tensors.emplace_back("big", expected(9, {10, 10}, at::kFloat));                  // 400 > limit
  auto res = write_sharded_safetensors(dir, tensors, 150);
  ASSERT_EQ(res.files.size(), 4u);  // w0 w1 | w2 w3 | w4 | big
  EXPECT_EQ(res.files[0].filename(), "model-00001-of-00004.safetensors");
  EXPECT_EQ(res.total_bytes, 5u * 64 + 400);
  auto index = nlohmann::json::parse(read_text_file(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 720);
  EXPECT_EQ(index["weight_map"]["w2"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["big"], "model-00004-of-00004.safetensors");
  auto src = open_safetensors_dir(dir);
  EXPECT_EQ(src->names().size(), tensors.size());
  for (const auto& [name, t] : tensors) EXPECT_TRUE(same(src->get(name), t)) << name;
  EXPECT_NE(src->where("w4").find("model-00003-of-00004"), std::string::npos);

  // Re-saving unsharded must not leave the old index shadowing the new file.
  auto single = write_sharded_safetensors(dir, tensors, 0);
  ASSERT_EQ(single.files.size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "model-00001-of-00004.safetensors"));
  auto src2 = open_safetensors_dir(dir);
  for (const auto& [name, t] : tensors) EXPECT_TRUE(same(src2->get(name), t)) << name;
  expect_error([&] { src2->get("w7"); }, {"w7", dir.string()});
}

TEST(Safetensors, IndexNamingMissingFileFails) {
  auto dir = scratch_dir();
  NamedTensors tensors = {{"x", expected(1, {8}, at::kFloat)}, {"y", expected(2, {8}, at::kFloat)}};
  write_sharded_safetensors(dir, tensors, 40);
  fs::remove(dir / "model-00002-of-00002.safetensors");
  expect_error([&] { open_safetensors_dir(dir); }, {"model-00002-of-00002.safetensors", "'y'"});
  expect_error([&] { open_safetensors_dir(dir / "nope"); }, {"nope"});
}

TEST(Safetensors, UnsupportedDtypeNamesFileTensorAndDtype) {
  auto dir = scratch_dir();
  write_safetensors(dir / "ids.safetensors", {{"token_ids", at::arange(6, at::kLong)}});
  auto f = SafetensorsFile::open(dir / "ids.safetensors");  // opening is fine
  expect_error([&] { f.tensor("token_ids"); }, {"ids.safetensors", "token_ids", "I64"});
}

TEST(Safetensors, RejectsShortAndOversizedHeaders) {
  auto dir = scratch_dir();
  write_bytes(dir / "short.safetensors", "abc");
  expect_error([&] { SafetensorsFile::open(dir / "short.safetensors"); }, {"short.safetensors"});
  auto p = craft(dir, "{}", 0);
  std::string raw = read_bytes(p);
  uint64_t big = 500;  // past the end of the file
  std::memcpy(raw.data(), &big, 8);
  write_bytes(p, raw);
  expect_error([&] { SafetensorsFile::open(p); }, {"crafted.safetensors", "past the end"});
  big = 200'000'000;  // over the 100 MB limit
  std::memcpy(raw.data(), &big, 8);
  write_bytes(p, raw);
  expect_error([&] { SafetensorsFile::open(p); }, {"crafted.safetensors", "limit"});
}

TEST(Safetensors, RejectsMalformedHeaders) {
  auto dir = scratch_dir();
  auto open = [&](const std::string& header, size_t data) {
    auto p = craft(dir, header, data);
    return [p] { SafetensorsFile::open(p); };
  };
  expect_error(open("{\"a\": {\"dtype\": ", 0), {"crafted.safetensors", "JSON"});
  expect_error(open("[1, 2]", 0), {"crafted.safetensors"});
  expect_error(open(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8), {"'w'", "dtype"});
  expect_error(open(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", 8), {"'w'", "shape"});
  expect_error(open(R"({"w": {"dtype": "F32", "shape": [2]}})", 8), {"'w'", "data_offsets"});
  expect_error(open(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8),
               {"'w'", "shape"});
  expect_error(open(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
               {"crafted.safetensors", "'w'", "12 bytes"});
  expect_error(open(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8),
               {"'w'"});
  expect_error(open(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12),
               {"crafted.safetensors", "'b'", "overlap"});
  expect_error(open(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})", 20),
               {"'b'", "hole"});
  expect_error(open(R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 8],
                        "data_offsets": [0, 8]}})", 8), {"'w'"});
  expect_error(open(R"({"__metadata__": {"format": 1}})", 0), {"__metadata__"});
}

TEST(Safetensors, TruncatedFileNamesTheTensor) {
  auto dir = scratch_dir();
  write_safetensors(dir / "t.safetensors", oracle_tensors());
  fs::resize_file(dir / "t.safetensors", fs::file_size(dir / "t.safetensors") - 3);
  // Writing puts wider dtypes first, so the last tensor in the data section is c.bf16.
  expect_error([&] { SafetensorsFile::open(dir / "t.safetensors"); },
               {"t.safetensors", "'c.bf16'", "truncated"});
}

// Random corruption of a valid header must only ever produce agenttune::Error, never a crash.
TEST(Safetensors, CorruptedHeadersNeverCrash) {
  auto dir = scratch_dir();
  write_safetensors(dir / "ok.safetensors", oracle_tensors());
  const std::string good = read_bytes(dir / "ok.safetensors");
  uint64_t n;
  std::memcpy(&n, good.data(), 8);
  std::mt19937 rng(7);
  int rejected = 0;
  for (int i = 0; i < 300; ++i) {
    std::string bad = good;
    for (int j = 0; j < 3; ++j)
      bad[8 + rng() % n] = "0123456789[]{},\":-e"[rng() % 19];
    write_bytes(dir / "bad.safetensors", bad);
    try {
      auto f = SafetensorsFile::open(dir / "bad.safetensors");
      for (const auto& e : f.entries()) {
        try {
          f.tensor(e.name).sum();
        } catch (const Error&) {
        }
      }
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace agenttune
