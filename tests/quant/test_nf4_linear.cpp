// nf4_linear: the matmul of a frozen NF4 weight (QLoRA's base projections) computes what a plain
// linear over the dequantised weight computes, forward and input grad, while autograd holds the
// record instead of the weight.
#include <gtest/gtest.h>

#include <torch/csrc/autograd/autograd.h>

#include "agenttune/quant/nf4.h"
#include "agenttune/quant/nf4_linear.h"
#include "agenttune/util/error.h"
#include "fake_device.h"

namespace agenttune::quant {
namespace {

namespace fake = agenttune::testing::fake_device;

struct Weight {
  std::vector<int64_t> shape;
  at::Tensor record;
};

Weight quantised_weight(int64_t out, int64_t in, c10::Device device) {
  at::manual_seed(11);
  const auto w = (at::randn({out, in}) * 0.03).to(device);
  const auto& tables = nf4_tables(device);
  const auto q = quantize_nf4(w, tables);
  auto record = at::empty({nf4_record_bytes(w.numel())}, w.options().dtype(at::kByte));
  pack_nf4(q, record);
  return {{out, in}, record};
}

TEST(Nf4Linear, ComputesTheLinearOfTheDequantisedWeightAndItsInputGrad) {
  const auto w = quantised_weight(96, 80, at::kCPU);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    const auto dense = dequantize_nf4(nf4_record_view(w.record, w.shape), dtype, nf4_tables(at::kCPU));
    const auto x0 = at::randn({3, 5, 80}).to(dtype);
    const auto g = at::randn({3, 5, 96}).to(dtype);
    auto x = x0.clone().requires_grad_(true), xr = x0.clone().requires_grad_(true);
    const auto y = nf4_linear(x, w.record, w.shape);
    const auto yr = at::linear(xr, dense);
    EXPECT_TRUE(at::equal(y, yr));
    y.backward(g);
    yr.backward(g);
    EXPECT_TRUE(at::equal(x.grad(), xr.grad())) << (x.grad() - xr.grad()).abs().max().item<double>();
    EXPECT_FALSE(w.record.grad().defined());
  }
}

TEST(Nf4Linear, AutogradKeepsTheRecordNotTheWeight) {
  const auto dev = fake::device(0);
  const auto w = quantised_weight(1024, 512, dev);  // bf16: 1 MiB dense, ~264 KiB as a record
  const auto x = at::randn({2, 4, 512}).to(dev).to(at::kBFloat16).requires_grad_(true);
  const auto g = at::randn({2, 4, 1024}).to(dev).to(at::kBFloat16);
  (void)nf4_tables(dev);  // the one upload, before counting
  fake::reset(0);
  const int64_t before = fake::counters(0).live_bytes;
  auto y = nf4_linear(x, w.record, w.shape);
  const int64_t held = fake::counters(0).live_bytes - before - static_cast<int64_t>(y.nbytes());
  const int64_t dense_bytes = 1024 * 512 * 2;
  EXPECT_LT(held, dense_bytes / 16) << "autograd holds " << held << " bytes after the forward";
  EXPECT_GE(fake::counters(0).peak_bytes - before, dense_bytes);  // the weight existed while the matmul ran
  y.backward(g);
  const auto c = fake::counters(0);
  EXPECT_EQ(c.host_syncs, 0) << fake::describe(c);
  EXPECT_EQ(c.h2d_bytes + c.d2h_bytes, 0) << fake::describe(c);
  EXPECT_EQ(x.grad().sizes(), x.sizes());
}

TEST(Nf4Linear, RefusesAnInputOfAnotherWidthOrDevice) {
  const auto w = quantised_weight(16, 64, at::kCPU);
  EXPECT_THROW(nf4_linear(at::randn({2, 63}), w.record, w.shape), Error);
  EXPECT_THROW(nf4_linear(at::randn({2, 64}).to(fake::device(0)), w.record, w.shape), Error);
}

}  // namespace
}  // namespace agenttune::quant
