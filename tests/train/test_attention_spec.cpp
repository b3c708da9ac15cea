// attention_spec() decides how a batch attends and the model obeys: a packed batch's loss, through
// the trainer's micro_batch_loss, equals the sum of each document's loss alone, for every path the
// device offers (the dense document mask on CPU, the varlen flash kernel on CUDA in bf16), and a
// spec the model cannot follow is refused instead of degrading to plain causal attention, where
// packed documents would silently attend to each other.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "agenttune/model/llama.h"
#include "agenttune/model/loss.h"
#include "agenttune/parallel/process_group.h"
#include "agenttune/parallel/sharded_model.h"
#include "agenttune/train/step.h"
#include "agenttune/util/error.h"
#include "tiny_llama.h"

namespace agenttune {
namespace {

constexpr int64_t kSeq = 24;
// Two rows of documents laid end to end, as the packer leaves them.
const std::vector<std::vector<int64_t>> kRows = {{7, 11, 6}, {15, 9}};

PackedBatch batch_of(const at::Tensor& tokens, const std::vector<std::vector<int64_t>>& rows, int64_t T) {
  PackedBatch b;
  const auto B = static_cast<int64_t>(rows.size());
  b.tokens = tokens;
  b.positions = at::empty({B, T}, at::kLong);
  b.doc_ids = at::empty({B, T}, at::kLong);
  b.targets = at::full({B, T}, kIgnoreIndex, at::kLong);
  for (int64_t r = 0; r < B; ++r) {
    int64_t t = 0, d = 0;
    for (int64_t len : rows[static_cast<size_t>(r)]) {
      b.positions[r].narrow(0, t, len).copy_(at::arange(len, at::kLong));
      b.doc_ids[r].narrow(0, t, len).fill_(d++);
      b.targets[r].narrow(0, t, len - 1).copy_(tokens[r].narrow(0, t + 1, len - 1));
      t += len;
    }
  }
  b.trained_tokens = (b.targets != kIgnoreIndex).sum().item<int64_t>();
  b.real_tokens = b.tokens.numel();
  return b;
}

TEST(AttentionSpec, DecidesFromTheBatchDeviceAndDtype) {
  const auto doc_ids = at::zeros({1, 4}, at::kLong);
  const auto causal = attention_spec(at::Tensor(), at::kCPU, at::kFloat);
  EXPECT_FALSE(causal.mask.has_value());
  EXPECT_FALSE(causal.cu_seqlens.has_value());
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    const auto packed = attention_spec(doc_ids, at::kCPU, dtype);
    EXPECT_TRUE(packed.mask.has_value());
    EXPECT_FALSE(packed.cu_seqlens.has_value());
  }
  EXPECT_TRUE(varlen_attention_runs(c10::Device("cuda:0"), at::kBFloat16));
  EXPECT_TRUE(varlen_attention_runs(c10::Device("cuda:0"), at::kHalf));
  EXPECT_FALSE(varlen_attention_runs(c10::Device("cuda:0"), at::kFloat));
  EXPECT_FALSE(varlen_attention_runs(at::kCPU, at::kBFloat16));
}

TEST(AttentionSpec, APackedBatchLosesWhatItsDocumentsLoseAlone) {
  std::vector<std::pair<c10::Device, c10::ScalarType>> paths = {{at::kCPU, at::kFloat}};
  if (at::hasCUDA()) paths.emplace_back(c10::Device("cuda:0"), at::kBFloat16);
  const LlamaConfig shape = testing::tiny_llama();
  auto g = at::make_generator<at::CPUGeneratorImpl>(5);
  const auto tokens = at::randint(3, shape.vocab_size, {2, kSeq}, g, at::kLong);
  const PackedBatch packed = batch_of(tokens, kRows, kSeq);
  for (const auto& [dev, dtype] : paths) {
    auto dist = parallel::ProcessGroup::create(parallel::WorldInfo{}, dev);
    parallel::ShardOptions o;
    o.compute_dtype = dtype;
    parallel::ShardedModel sm(make_llama(shape, 7), *dist, parallel::WorldInfo{}, o);
    at::NoGradGuard ng;
    const double together = micro_batch_loss(sm, packed, AttentionMode::Document, dev).item<double>();
    double alone = 0;
    for (size_t r = 0; r < kRows.size(); ++r) {
      int64_t t = 0;
      for (int64_t len : kRows[r]) {
        auto doc = batch_of(tokens[static_cast<int64_t>(r)].narrow(0, t, len).unsqueeze(0), {{len}}, len);
        alone += micro_batch_loss(sm, doc, AttentionMode::Causal, dev).item<double>();
        t += len;
      }
    }
    // bf16 kernels round differently for different sequence layouts.
    EXPECT_NEAR(together, alone, (dtype == at::kFloat ? 1e-5 : 2e-2) * alone) << dev << " " << dtype;
    // Plain causal attention over the packed rows lets documents meet: a different loss.
    const double mixed = micro_batch_loss(sm, packed, AttentionMode::Causal, dev).item<double>();
    EXPECT_GT(std::abs(mixed - alone), 1e-3 * alone) << dev << " " << dtype;
  }
}

TEST(AttentionSpec, TheModelRefusesASpecItCannotFollow) {
  auto model = make_llama(testing::tiny_llama(), 7);
  const PackedBatch b = batch_of(at::randint(3, 50, {2, kSeq}, at::kLong), kRows, kSeq);
  auto spans = document_spans(b.doc_ids);
  AttentionSpec varlen;
  varlen.cu_seqlens = spans.cu_seqlens;
  varlen.max_seqlen = spans.max_seqlen;
  AttentionSpec both = varlen;
  both.mask = document_causal_mask(b.doc_ids);
  at::NoGradGuard ng;
  for (const auto& spec : {varlen, both}) {
    try {
      model->forward(b.tokens, b.positions, spec);
      FAIL() << "a varlen spec ran on CPU in float32";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("attention_spec()"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace agenttune
