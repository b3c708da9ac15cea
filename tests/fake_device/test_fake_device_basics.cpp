// The fake accelerator itself: it must compute what the CPU computes, refuse what CUDA refuses, and
// count what a GPU would make expensive. The other fake_device tests rely on all three.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "agenttune/parallel/host_syncs.h"
#include "agenttune/util/error.h"
#include "fake_device.h"

namespace fd = agenttune::testing::fake_device;

namespace {

TEST(FakeDevice, ComputesWhatTheCpuComputes) {
  auto a = at::randn({8, 16}), b = at::randn({16, 4});
  auto c = at::mm(a.to(fd::device()), b.to(fd::device()));
  EXPECT_EQ(c.device(), fd::device());
  EXPECT_EQ(c.device().str(), "fake:0");
  EXPECT_TRUE(at::equal(c.cpu(), at::mm(a, b)));
  auto q = at::randn({2, 4, 6, 8}), k = at::randn({2, 4, 6, 8}), v = at::randn({2, 4, 6, 8});
  auto ref = at::scaled_dot_product_attention(q, k, v, {}, 0.0, true);
  auto got = at::scaled_dot_product_attention(q.to(fd::device()), k.to(fd::device()), v.to(fd::device()), {}, 0.0,
                                              true);
  EXPECT_TRUE(at::allclose(got.cpu(), ref, 1e-6, 1e-6));
}

TEST(FakeDevice, RefusesMixingHostAndDeviceTensorsLikeCuda) {
  auto dev = at::ones({4, 4}, fd::device());
  try {
    (void)at::mm(dev, at::ones({4, 4}));
    FAIL() << "mixing devices was accepted";
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("Expected all tensors to be on the same device"), std::string::npos) << msg;
    EXPECT_NE(msg.find("aten::mm"), std::string::npos) << msg;
  }
  // As on CUDA, a 0-dim host tensor is a scalar and may be mixed in.
  EXPECT_EQ((dev * at::scalar_tensor(2.0)).sum().item<double>(), 32.0);
}

TEST(FakeDevice, CountsHostSyncsAndTransfers) {
  fd::reset(0);
  auto host = at::ones({256}, at::kFloat);
  auto dev = host.to(fd::device(), /*non_blocking=*/true);  // 1 KiB up, the host does not wait
  auto s = dev.sum();                                       // on the device: no sync
  EXPECT_EQ(fd::counters(0).host_syncs, 0);
  (void)s.item<float>();  // one sync
  (void)dev.cpu();        // a blocking copy down: another
  auto c = fd::counters(0);
  EXPECT_EQ(c.h2d_bytes, 1024);
  EXPECT_EQ(c.h2d_copies, 1);
  EXPECT_EQ(c.host_syncs, 2);
  EXPECT_EQ(c.d2h_bytes, 1024 + 4);
  (void)at::nonzero(dev);  // data-dependent output size: CUDA syncs
  EXPECT_EQ(fd::counters(0).host_syncs, 3);
  (void)host.to(fd::device());  // a blocking upload waits too (CUDA's memcpy_and_sync)
  EXPECT_EQ(fd::counters(0).host_syncs, 4);
}

// The fake device reports its syncs through CUDA's own sync debug switch, so HostSyncCounter (the
// trainer's metrics.host_syncs) is tested here as it runs on a GPU; other warnings pass through.
TEST(FakeDevice, HostSyncCounterCountsThroughCudasSyncDebugMode) {
  struct Keep : c10::WarningHandler {
    void process(const c10::Warning& w) override { seen.push_back(w.msg()); }
    std::vector<std::string> seen;
  } keep;
  c10::WarningUtils::WarningHandlerGuard guard(&keep);
  auto dev = at::ones({64}, at::kFloat).to(fd::device(), true);
  (void)dev.sum().item<float>();  // not counted: no counter open
  agenttune::parallel::HostSyncCounter counter(fd::device());
  counter.start();
  (void)dev.sum().item<float>();
  (void)dev.cpu();
  TORCH_WARN("an unrelated warning");
  (void)dev.mul(2);  // no sync
  EXPECT_EQ(counter.stop(), 2);
  EXPECT_NE(counter.first_site().find(":"), std::string::npos) << counter.first_site();
  (void)dev.sum().item<float>();  // closed again: nothing counted, nothing warned
  EXPECT_EQ(keep.seen, std::vector<std::string>{"an unrelated warning"});
  counter.start();
  EXPECT_EQ(counter.stop(), 0);
  EXPECT_THROW(agenttune::parallel::HostSyncCounter(c10::Device(c10::kCPU)), agenttune::Error);
}

TEST(FakeDevice, CountsLiveAndPeakBytesPerDevice) {
  fd::reset_all();
  const auto live0 = fd::counters(1).live_bytes;
  {
    c10::DeviceGuard guard(fd::device(1));
    auto t = at::empty({1024}, at::TensorOptions().dtype(at::kFloat).device(fd::device(1)));
    EXPECT_EQ(fd::counters(1).live_bytes - live0, 4096);
    EXPECT_EQ(t.device().index(), 1);
  }
  EXPECT_EQ(fd::counters(1).live_bytes, live0);
  EXPECT_EQ(fd::counters(1).peak_bytes - live0, 4096);
  EXPECT_THROW(c10::DeviceGuard(fd::device(fd::device_count())), c10::Error);
}

TEST(FakeDevice, BackwardRunsOnTheDevice) {
  auto w = at::randn({16, 16}).to(fd::device()).requires_grad_(true);
  auto x = at::randn({4, 16}).to(fd::device());
  auto loss = at::mm(x, w).pow(2).sum();
  loss.backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().device(), fd::device());
  auto wc = w.detach().cpu().requires_grad_(true);
  at::mm(x.cpu(), wc).pow(2).sum().backward();
  EXPECT_TRUE(at::allclose(w.grad().cpu(), wc.grad(), 1e-5, 1e-5));
}

}  // namespace
