#include "agenttune/train/device_peak.h"

#include <algorithm>
#include <cctype>
#include <utility>
#include <vector>

#ifdef USE_C10D_NCCL  // a CUDA build of LibTorch: the CUDA runtime headers are there
#include <ATen/cuda/CUDAContext.h>
#endif

namespace agenttune {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string name_of(c10::Device d) {
#ifdef USE_C10D_NCCL
  if (d.is_cuda()) return at::cuda::getDeviceProperties(d.index())->name;
#endif
  return "";
}

}  // namespace

double peak_flops_by_name(const std::string& name) {
  // Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets. The H100 variants
  // differ, so the PCIe and NVL names are matched before the plain one (which is the SXM part).
  static const std::vector<std::pair<std::string, double>> table = {
      {"h100 nvl", 835e12}, {"h100 pcie", 756e12}, {"h100", 989e12},
      {"h200", 989e12},     {"gh200", 989e12},     {"a100", 312e12},
      {"b200", 2250e12},
  };
  const std::string n = lower(name);
  if (n.empty()) return 0;
  for (const auto& [key, flops] : table)
    if (n.find(key) != std::string::npos) return flops;
  return 0;
}

DevicePeak device_peak(c10::Device device, double override_tflops) {
  DevicePeak p;
  p.device_name = name_of(device);
  if (override_tflops > 0) {
    p.flops = override_tflops * 1e12;
    p.source = "metrics.peak_tflops";
  } else if (double f = peak_flops_by_name(p.device_name); f > 0) {
    p.flops = f;
    p.source = "table";
  } else {
    p.source = "unknown";
  }
  return p;
}

}  // namespace agenttune
