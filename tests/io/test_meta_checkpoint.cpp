#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "agenttune/io/meta_checkpoint.h"
#include "agenttune/io/safetensors.h"
#include "agenttune/util/error.h"
#include "io_test_util.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;
namespace fs = std::filesystem;

// 2 model-parallel shards made by the oracle from random HF weights (inverse permutation).
TEST(MetaCheckpoint, TwoShardsMergeBackToTheHfOriginals) {
  auto dir = scratch_dir();
  auto info = nlohmann::json::parse(oracle("meta_checkpoint", dir));
  ASSERT_TRUE(is_meta_checkpoint_dir(dir));

  LlamaConfig c = read_meta_params(dir);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.intermediate_size, info["intermediate_size"].get<int64_t>());
  EXPECT_EQ(c.vocab_size, 48);  // params.json says -1: taken from tok_embeddings
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.dtype, at::kBFloat16);

  auto meta = open_meta_checkpoint(dir, c);
  auto hf = SafetensorsFile::open(dir / "hf.safetensors");
  EXPECT_EQ(meta->names().size(), hf.entries().size());
  for (const auto& e : hf.entries()) {
    ASSERT_TRUE(meta->contains(e.name)) << e.name;
    EXPECT_TRUE(same(meta->get(e.name), hf.tensor(e.name))) << e.name;
  }
  EXPECT_FALSE(meta->contains("rope.freqs"));
  try {
    meta->get("model.layers.2.self_attn.q_proj.weight");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.2.self_attn.q_proj.weight"),
              std::string::npos);
  }
}

TEST(MetaCheckpoint, FfnSizingMatchesMetaModelPy) {
  auto dir = scratch_dir();
  oracle("meta_checkpoint", dir);  // supplies a shard to probe; params are overwritten below
  auto params = [&](const std::string& json) {
    std::ofstream(dir / "params.json") << json;
    return read_meta_params(dir);
  };
  // Llama-2-7B: multiple_of 256 -> 11008; 70B: ffn_dim_multiplier 1.3, multiple_of 4096 -> 28672.
  EXPECT_EQ(params(R"({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32,
                      "norm_eps": 1e-05, "vocab_size": -1})").intermediate_size, 11008);
  auto c70 = params(R"({"dim": 8192, "multiple_of": 4096, "ffn_dim_multiplier": 1.3,
                       "n_heads": 64, "n_kv_heads": 8, "n_layers": 80, "norm_eps": 1e-05,
                       "vocab_size": 32000})");
  EXPECT_EQ(c70.intermediate_size, 28672);
  EXPECT_EQ(c70.num_key_value_heads, 8);
  EXPECT_EQ(c70.vocab_size, 32000);
  try {
    params(R"({"dim": 64, "n_layers": 2})");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n_heads"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("params.json"), std::string::npos) << e.what();
  }
}

TEST(MetaCheckpoint, MissingShardTensorNamesFile) {
  auto dir = scratch_dir();
  oracle("meta_checkpoint", dir);
  // Swap shard 1 for a state dict lacking everything: merging must name the file and tensor.
  oracle("torch_save", dir / "consolidated.01.pth");
  auto meta = open_meta_checkpoint(dir, read_meta_params(dir));
  try {
    meta->get("lm_head.weight");
    ADD_FAILURE();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("consolidated.01.pth"), std::string::npos) << m;
    EXPECT_NE(m.find("output.weight"), std::string::npos) << m;
  }
  EXPECT_FALSE(is_meta_checkpoint_dir(dir / "nowhere"));
}

}  // namespace
}  // namespace agenttune
