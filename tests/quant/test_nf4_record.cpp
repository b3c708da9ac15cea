// The flat byte form of NF4 weights (what the engine shards and all-gathers as uint8), and the
// device path: quantising and dequantising on an accelerator without a host sync or a transfer.
#include <gtest/gtest.h>

#include <cstring>

#include "agenttune/quant/nf4.h"
#include "agenttune/util/error.h"
#include "fake_device.h"

namespace agenttune::quant {
namespace {

namespace fake = agenttune::testing::fake_device;

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto x = a.contiguous().cpu(), y = b.contiguous().cpu();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

const Nf4Tables& cpu_tables() {
  static const Nf4Tables t = make_nf4_tables(at::kCPU);
  return t;
}

// A unit's projections, Llama-shaped (q, k (GQA), gate) plus an odd one, drawn like trained weights.
std::vector<at::Tensor> unit_weights() {
  at::manual_seed(7);
  return {at::randn({128, 128}) * 0.02, at::randn({32, 128}) * 0.02, at::randn({352, 128}) * 0.05,
          at::randn({17, 9})};
}

TEST(Nf4Record, LayoutHoldsEveryFieldAlignedAndCostsAboutHalfAByte) {
  for (int64_t n : {1, 2, 63, 64, 65, 16384, 16385, 1408 * 512, 4096 * 11008}) {
    SCOPED_TRACE(n);
    const auto l = nf4_record_layout(n);
    EXPECT_EQ(l.absmax_codes_at - l.absmax2_at, 4 * nf4_absmax2_blocks(n));
    EXPECT_EQ(l.codes_at - l.absmax_codes_at, nf4_blocks(n));
    EXPECT_GE(l.bytes - l.codes_at, (n + 1) / 2);
    EXPECT_LT(l.bytes - l.codes_at - (n + 1) / 2, kNf4RecordAlignment);
    EXPECT_EQ(l.bytes % kNf4RecordAlignment, 0);
  }
  // bnb's storage per weight with double quantisation: 4 bits + 8 bits / 64 + 32 bits / (64 * 256).
  const int64_t n = 4096 * 11008;
  EXPECT_NEAR(double(nf4_record_bytes(n)) / double(n), 0.5 + 1.0 / 64 + 4.0 / (64 * 256), 1e-6);
}

TEST(Nf4Record, PackedBufferOfAUnitDequantisesAsTheTensors) {
  const auto weights = unit_weights();
  std::vector<Nf4Tensor> qs;
  int64_t total = 0;
  for (const auto& w : weights) {
    qs.push_back(quantize_nf4(w, cpu_tables()));
    total += nf4_record_bytes(w.numel());
  }
  // A flat buffer of whole records, as the engine concatenates them; poisoned so that a field the
  // packer forgets shows.
  auto flat = at::full({total}, 0xAB, at::kByte);
  int64_t at = 0;
  for (const auto& q : qs) {
    pack_nf4(q, flat.slice(0, at, at + nf4_record_bytes(q.numel())));
    at += nf4_record_bytes(q.numel());
  }
  // Through bytes, as an all-gather delivers them (a copy of the buffer, nothing else).
  const auto gathered = flat.clone();
  at = 0;
  for (size_t i = 0; i < qs.size(); ++i) {
    SCOPED_TRACE(i);
    const int64_t bytes = nf4_record_bytes(qs[i].numel());
    const auto view = nf4_record_view(gathered.slice(0, at, at + bytes), qs[i].shape);
    EXPECT_TRUE(same_bits(view.codes, qs[i].codes));
    EXPECT_TRUE(same_bits(view.absmax_codes, qs[i].absmax_codes));
    EXPECT_TRUE(same_bits(view.absmax2, qs[i].absmax2));
    EXPECT_TRUE(same_bits(view.offset, qs[i].offset));
    for (auto dtype : {at::kFloat, at::kBFloat16})
      EXPECT_TRUE(same_bits(dequantize_nf4(view, dtype, cpu_tables()), dequantize_nf4(qs[i], dtype, cpu_tables())));
    // Into a slice of a larger compute-dtype buffer (a unit's gathered weights).
    auto dst = at::zeros({qs[i].numel() + 8}, at::kBFloat16);
    dequantize_nf4_into(view, dst.slice(0, 4, 4 + qs[i].numel()), cpu_tables());
    EXPECT_TRUE(same_bits(dst.slice(0, 4, 4 + qs[i].numel()).view(qs[i].shape),
                          dequantize_nf4(qs[i], at::kBFloat16, cpu_tables())));
    EXPECT_EQ(dst.slice(0, 0, 4).abs().sum().item<float>(), 0.0f);
    EXPECT_EQ(dst.slice(0, 4 + qs[i].numel()).abs().sum().item<float>(), 0.0f);
    at += bytes;
  }
}

TEST(Nf4Record, RefusesWhatItCannotRead) {
  const auto q = quantize_nf4(at::randn({8, 64}), cpu_tables());
  const int64_t bytes = nf4_record_bytes(q.numel());
  EXPECT_THROW(pack_nf4(q, at::zeros({bytes - 1}, at::kByte)), Error);
  EXPECT_THROW(pack_nf4(q, at::zeros({bytes}, at::kInt)), Error);
  const auto buffer = at::zeros({bytes + 2}, at::kByte);
  EXPECT_THROW(nf4_record_view(buffer.slice(0, 2, bytes + 2), q.shape), Error);  // misaligned
  EXPECT_THROW(nf4_record_view(buffer.slice(0, 0, bytes), {8, 65}), Error);      // another weight's size
  EXPECT_THROW(quantize_nf4(at::ones({4, 4}, at::kInt), cpu_tables()), Error);
  EXPECT_THROW(quantize_nf4(at::ones({0, 4}), cpu_tables()), Error);
  EXPECT_THROW(dequantize_nf4_into(q, at::zeros({8, 63}), cpu_tables()), Error);
}

TEST(Nf4Device, QuantiseAndDequantiseOnTheDeviceWithoutSyncsOrTransfers) {
  const auto dev = fake::device(0);
  const auto tables = make_nf4_tables(dev);  // the one upload, before counting
  std::vector<at::Tensor> on_device;
  for (const auto& w : unit_weights()) on_device.push_back(w.to(dev).to(at::kBFloat16));
  fake::reset(0);
  for (size_t i = 0; i < on_device.size(); ++i) {
    const auto& w = on_device[i];
    const auto q = quantize_nf4(w, tables);
    auto record = at::empty({nf4_record_bytes(w.numel())}, w.options().dtype(at::kByte));
    pack_nf4(q, record);
    const auto out = dequantize_nf4(nf4_record_view(record, q.shape), at::kBFloat16, tables);
    const auto c = fake::counters(0);
    ASSERT_EQ(c.host_syncs, 0) << fake::describe(c);
    ASSERT_EQ(c.h2d_bytes + c.d2h_bytes, 0) << fake::describe(c);
    EXPECT_EQ(out.device(), dev);
    const auto host_w = w.cpu();
    EXPECT_TRUE(same_bits(out, dequantize_nf4(quantize_nf4(host_w, cpu_tables()), at::kBFloat16, cpu_tables())));
    fake::reset(0);
  }
}

}  // namespace
}  // namespace agenttune::quant
