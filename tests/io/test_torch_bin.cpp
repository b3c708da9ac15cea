#include <gtest/gtest.h>

#include <fstream>

#include "agenttune/io/torch_bin.h"
#include "agenttune/util/error.h"
#include "io_test_util.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;
namespace fs = std::filesystem;

std::map<std::string, at::Tensor> as_map(const NamedTensors& v) {
  return {v.begin(), v.end()};
}

TEST(TorchBin, LoadsPythonStateDictIncludingBf16AndViews) {
  auto dir = scratch_dir();
  oracle("torch_save", dir / "pytorch_model.bin");
  auto loaded = load_torch_state_dict(dir / "pytorch_model.bin");
  auto m = as_map(loaded);
  ASSERT_EQ(m.size(), oracle_specs().size() + 2);
  EXPECT_EQ(loaded.front().first, "a.f32");  // OrderedDict order is kept
  for (const auto& s : oracle_specs())
    EXPECT_TRUE(same(m.at(s.name), expected(s.k, s.shape, s.dtype))) << s.name;
  at::Tensor base = expected(5, {4, 6}, at::kBFloat16);
  EXPECT_TRUE(same(m.at("e.base"), base));
  EXPECT_TRUE(same(m.at("e.view"), base.slice(0, 1, 3)));  // storage offset honoured

  auto src = open_torch_bin_dir(dir);
  EXPECT_TRUE(src->contains("c.bf16"));
  EXPECT_TRUE(same(src->get("c.bf16"), expected(3, {2, 3, 4}, at::kBFloat16)));
  EXPECT_NE(src->where("c.bf16").find("pytorch_model.bin"), std::string::npos);
}

TEST(TorchBin, ShardedIndexLoadsLazily) {
  auto dir = scratch_dir();
  oracle("torch_save", dir / "part1.bin");
  std::ofstream(dir / "pytorch_model.bin.index.json")
      << R"({"metadata": {}, "weight_map": {"a.f32": "part1.bin", "b.f16": "part1.bin"}})";
  auto src = open_torch_bin_dir(dir);
  EXPECT_EQ(src->names(), (std::vector<std::string>{"a.f32", "b.f16"}));
  EXPECT_TRUE(same(src->get("b.f16"), expected(2, {7}, at::kHalf)));
  try {
    src->get("a.f16");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'a.f16'"), std::string::npos) << e.what();
  }
}

TEST(TorchBin, IndexNamingMissingFileFails) {
  auto dir = scratch_dir();
  std::ofstream(dir / "pytorch_model.bin.index.json")
      << R"({"weight_map": {"w": "pytorch_model-00001-of-00002.bin"}})";
  try {
    open_torch_bin_dir(dir);
    ADD_FAILURE();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("pytorch_model-00001-of-00002.bin"), std::string::npos) << m;
    EXPECT_NE(m.find("'w'"), std::string::npos) << m;
  }
}

TEST(TorchBin, NonCheckpointFilesFailWithTheirName) {
  auto dir = scratch_dir();
  std::ofstream(dir / "junk.bin") << "definitely not a zip";
  std::ofstream(dir / "fake.bin") << "PK\x03\x04 but then garbage";
  for (const char* name : {"junk.bin", "fake.bin", "absent.bin"}) {
    try {
      load_torch_state_dict(dir / name);
      ADD_FAILURE() << name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace agenttune
