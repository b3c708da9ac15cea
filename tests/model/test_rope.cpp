// RoPE: the cat-free rotation against the concatenating formula transformers uses (the same bits,
// forward and backward), and the cached tables against computed ones.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "agenttune/model/llama.h"
#include "agenttune/model/rope.h"
#include <torch/csrc/autograd/autograd.h>

namespace agenttune {
namespace {

LlamaConfig rope_config() {
  LlamaConfig c;
  c.hidden_size = 64, c.num_attention_heads = 4, c.num_key_value_heads = 2, c.max_position_embeddings = 48;
  return c;
}

// transformers' apply_rotary_pos_emb: q * cos + rotate_half(q) * sin.
at::Tensor concatenating_rope(const at::Tensor& x, const RopeTables& t) {
  const int64_t h = x.size(-1) / 2;
  auto rotated = at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
  return x * t.cos.unsqueeze(1) + rotated * t.sin.unsqueeze(1);
}

TEST(Rope, CatFreeRotationHasTheBitsOfTheConcatenatingOne) {
  const auto c = rope_config();
  const int64_t B = 2, H = 4, T = 11, hd = 16;
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    // Packed positions (computed tables) and a transposed q as the attention makes it.
    auto positions = at::cat({at::arange(5, at::kLong), at::arange(6, at::kLong)}).expand({B, T}).contiguous();
    auto tables = RotaryEmbedding(c).tables(positions, dtype);
    auto q = at::randn({B, T, H, hd}).to(dtype).transpose(1, 2).requires_grad_(true);
    auto grad = at::randn({B, H, T, hd}).to(dtype);
    auto ours = apply_rope(q, tables);
    auto g_ours = torch::autograd::grad({ours}, {q}, {grad})[0];
    auto theirs = concatenating_rope(q, tables);
    auto g_theirs = torch::autograd::grad({theirs}, {q}, {grad})[0];
    EXPECT_TRUE(at::equal(ours, theirs)) << c10::toString(dtype);
    EXPECT_TRUE(at::equal(g_ours, g_theirs)) << c10::toString(dtype);
    EXPECT_EQ(ours.strides(), theirs.strides());
    EXPECT_GT((ours - q).abs().max().item<double>(), 0.1);  // it rotates
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(apply_rope(q, tables), theirs));
  }
}

TEST(Rope, RunsOfPositionsReadTheCachedTable) {
  const auto c = rope_config();
  RotaryEmbedding rope(c);
  // Decoding steps and prefixes: runs p, p+1, ... in every row, within and past the model's length.
  for (int64_t start : {0, 7, 40, 90}) {
    auto positions = default_positions(3, 9, start, at::kCPU);
    auto cached = rope.tables(positions, at::kFloat);
    auto computed = rope.tables(positions.to(at::kInt), at::kFloat);  // not int64: computed
    EXPECT_EQ(cached.cos.sizes(), (std::vector<int64_t>{3, 9, 16}));
    // Views of one table: two calls share storage (nothing computed per call).
    EXPECT_EQ(rope.tables(positions, at::kFloat).cos.data_ptr(), cached.cos.data_ptr()) << start;
    EXPECT_TRUE(at::allclose(cached.cos, computed.cos, 0, 1e-6)) << start;
    EXPECT_TRUE(at::allclose(cached.sin, computed.sin, 0, 1e-6)) << start;
  }
}

}  // namespace
}  // namespace agenttune
