// The peak that MFU is measured against: by device name from the built-in table, or from
// metrics.peak_tflops.
#include <gtest/gtest.h>

#include "agenttune/train/device_peak.h"

using namespace agenttune;

TEST(DevicePeak, TableByTheNamesTheDriverReports) {
  EXPECT_EQ(peak_flops_by_name("NVIDIA H100 80GB HBM3"), 989e12);  // SXM
  EXPECT_EQ(peak_flops_by_name("NVIDIA H100 PCIe"), 756e12);
  EXPECT_EQ(peak_flops_by_name("NVIDIA H100 NVL"), 835e12);
  EXPECT_EQ(peak_flops_by_name("NVIDIA H200"), 989e12);
  EXPECT_EQ(peak_flops_by_name("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_EQ(peak_flops_by_name("NVIDIA A100-PCIE-40GB"), 312e12);
  EXPECT_EQ(peak_flops_by_name("NVIDIA B200"), 2250e12);
  EXPECT_EQ(peak_flops_by_name("Tesla V100-SXM2-32GB"), 0.0);
  EXPECT_EQ(peak_flops_by_name(""), 0.0);
}

TEST(DevicePeak, TheConfigOverrideWinsAndTheCpuHasNoPeak) {
  auto cpu = device_peak(c10::Device(c10::kCPU), 0);
  EXPECT_EQ(cpu.flops, 0.0);
  EXPECT_EQ(cpu.source, "unknown");
  auto set = device_peak(c10::Device(c10::kCPU), 0.5);
  EXPECT_EQ(set.flops, 0.5e12);
  EXPECT_EQ(set.source, "metrics.peak_tflops");
}
