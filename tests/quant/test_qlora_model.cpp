// QLoRA's model side: quantize_projections swaps every decoder projection for its NF4 record and
// the model then computes exactly what it computes over the dequantised weights (logits and the
// adapters' gradients); nf4_weight_slices gives the engine those records' bytes from a checkpoint's
// fp32 weights, as quantising the loaded model would.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <map>

#include "agenttune/model/llama.h"
#include "agenttune/model/lora.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/nf4_weight_slices.h"
#include "agenttune/quant/nf4.h"
#include "agenttune/util/error.h"
#include "tiny_llama.h"

namespace agenttune {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// rank-4 adapters on q and down only, B drawn non-zero so that the adapters change the output.
LlamaForCausalLM adapted_model() {
  auto m = make_llama(testing::tiny_llama(), 7);
  AdapterConfig a;
  a.kind = AdapterKind::Qlora, a.rank = 4, a.alpha = 8, a.init_seed = 3, a.target_modules = {"q_proj", "down_proj"};
  add_adapters(m, a);
  auto g = at::make_generator<at::CPUGeneratorImpl>(11);
  at::NoGradGuard ng;
  for (auto& p : m->named_parameters())
    if (ends_with(p.key(), ".lora_B")) p.value().normal_(0, 0.05, g);
  return m;
}

std::map<std::string, at::Tensor> adapter_grads(LlamaForCausalLM& m, const at::Tensor& tokens) {
  const auto positions = default_positions(tokens.size(0), tokens.size(1), 0, at::kCPU);
  const auto logits = m->forward(tokens, positions);
  cross_entropy_sum(logits, tokens.roll(-1, 1)).backward();
  std::map<std::string, at::Tensor> out{{"logits", logits.detach()}};
  for (const auto& p : m->named_parameters())
    if (is_adapter_parameter(p.key())) out[p.key()] = p.value().grad();
  return out;
}

TEST(Qlora, QuantisedProjectionsComputeTheirDequantisedWeights) {
  auto q = adapted_model();
  quantize_projections(q, /*quantise_values=*/true);
  int64_t records = 0;
  for (const auto& p : q->named_parameters()) {
    SCOPED_TRACE(p.key());
    if (ends_with(p.key(), ".weight_nf4")) {
      ++records;
      EXPECT_EQ(p.value().scalar_type(), at::kByte);
      EXPECT_FALSE(p.value().requires_grad());
    } else if (ends_with(p.key(), "_proj.weight")) {
      ADD_FAILURE() << "a decoder projection kept its dense weight";
    }
    EXPECT_EQ(p.value().requires_grad(), is_adapter_parameter(p.key()));
  }
  EXPECT_EQ(records, 7 * testing::tiny_llama().num_hidden_layers);
  EXPECT_TRUE(has_quantized_projections(q));
  EXPECT_THROW(merge_adapters(q), Error);
  EXPECT_THROW(quantize_projections(q, true), Error);

  auto dense = adapted_model();
  quantize_projections(dense, true);
  dequantize_projections(dense, at::kFloat);
  EXPECT_FALSE(has_quantized_projections(dense));
  // The dequantised base is NF4's, not the original one.
  EXPECT_FALSE(at::equal(dense->model->layers[0]->self_attn->q_proj->weight,
                         adapted_model()->model->layers[0]->self_attn->q_proj->weight));

  at::manual_seed(5);
  const auto tokens = at::randint(0, testing::tiny_llama().vocab_size, {2, 12}, at::kLong);
  const auto got = adapter_grads(q, tokens), want = adapter_grads(dense, tokens);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(got.size(), 1 + 2 * 2 * testing::tiny_llama().num_hidden_layers);
  for (const auto& [name, t] : want) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(got.at(name).defined());
    EXPECT_TRUE(at::equal(got.at(name), t));
  }
}

TEST(Qlora, WeightSlicesGiveTheRecordsOfTheCheckpointWeights) {
  const auto original = make_llama(testing::tiny_llama(), 7);
  std::map<std::string, at::Tensor> checkpoint;
  for (const auto& p : original->named_parameters()) checkpoint[p.key()] = p.value().detach().clone();
  auto filled = make_llama(testing::tiny_llama(), 7);
  quantize_projections(filled, true);
  // The engine's view of a continued run: a skeleton whose records have no values yet.
  LlamaForCausalLM skeleton(testing::tiny_llama(), ParamOptions().device(at::kMeta));
  quantize_projections(skeleton, /*quantise_values=*/false);
  int64_t calls = 0;
  parallel::WeightSlices inner = [&](const parallel::FlatParam& p, int64_t offset, int64_t numel) {
    ++calls;
    return checkpoint.at(p.name).reshape({-1}).narrow(0, offset, numel);
  };
  const auto slices = parallel::nf4_weight_slices(inner, skeleton);
  for (const auto& p : filled->named_parameters()) {
    SCOPED_TRACE(p.key());
    const auto& want = p.value();
    const parallel::FlatParam fp{p.key(), want.sizes().vec(), 0, want.numel()};
    const int64_t cut = want.numel() / 3 + 1;  // two ranks' slices, cutting a record
    const auto got = at::cat({slices(fp, 0, cut), slices(fp, cut, want.numel() - cut)});
    EXPECT_TRUE(at::equal(got, want.reshape({-1}).to(got.scalar_type())));
    if (ends_with(p.key(), ".weight_nf4")) EXPECT_EQ(got.scalar_type(), at::kByte);
  }
  EXPECT_GT(calls, 0);
  EXPECT_FALSE(parallel::nf4_weight_slices({}, skeleton));
  EXPECT_THROW(parallel::nf4_weight_slices(inner, filled = make_llama(testing::tiny_llama(), 7)), Error);
}

}  // namespace
}  // namespace agenttune
