// Which device a rank takes (dist.device, --device): the rules that decide whether a cluster job
// starts on the right GPUs, checked without any.
#include <gtest/gtest.h>

#include "agenttune/parallel/device.h"
#include "error_of.h"

using namespace agenttune;
using namespace agenttune::parallel;

namespace {

using agenttune::testing::error_of;

TEST(DeviceChoice, AutoTakesTheLocalRanksGpuOrTheCpu) {
  const auto spec = parse_device_spec("auto", "dist.device");
  EXPECT_EQ(choose_device(spec, 0, 0), c10::Device(c10::kCPU));
  EXPECT_EQ(choose_device(spec, 3, 0), c10::Device(c10::kCPU));
  EXPECT_EQ(choose_device(spec, 3, 8), c10::Device(c10::kCUDA, 3));
  EXPECT_EQ(choose_device(parse_device_spec("cpu", "dist.device"), 3, 8), c10::Device(c10::kCPU));
}

TEST(DeviceChoice, OneVisibleGpuPerTaskIsTaken) {
  // Slurm --gpus-per-task=1: every task sees one GPU, whatever its local rank.
  const auto spec = parse_device_spec("cuda", "dist.device");
  EXPECT_EQ(choose_device(spec, 5, 1), c10::Device(c10::kCUDA, 0));
  EXPECT_EQ(choose_device(parse_device_spec("auto", "dist.device"), 5, 1), c10::Device(c10::kCUDA, 0));
  EXPECT_EQ(choose_device(spec, 1, 8), c10::Device(c10::kCUDA, 1));
}

TEST(DeviceChoice, ImpossibleRequestsAreClearErrors) {
  const auto cuda = parse_device_spec("cuda", "dist.device");
  auto e = error_of([&] { choose_device(cuda, 3, 2); });
  EXPECT_NE(e.find("local rank 3 needs cuda:3, but this process sees only 2 cuda devices"), std::string::npos) << e;
  e = error_of([&] { choose_device(parse_device_spec("cuda:4", "dist.device"), 0, 2); });
  EXPECT_NE(e.find("cuda:4 does not exist: this process sees 2 cuda device(s)"), std::string::npos) << e;
  e = error_of([&] { choose_device(cuda, 0, 0); });
  EXPECT_NE(e.find("no cuda device is visible"), std::string::npos) << e;
}

TEST(DeviceChoice, SpellingsAreValidated) {
  EXPECT_EQ(parse_device_spec("cuda:2", "x").index, 2);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "cuda:1:2", ""}) {
    auto e = error_of([&] { parse_device_spec(bad, "dist.device"); });
    EXPECT_NE(e.find("dist.device '" + std::string(bad) + "'"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("auto, cpu, cuda, cuda:N"), std::string::npos) << bad << ": " << e;
  }
}

}  // namespace
