#pragma once
// The accelerator's dense bf16 peak, which MFU is measured against.
#include <c10/core/Device.h>

#include <string>

namespace agenttune {

struct DevicePeak {
  std::string device_name;  // "NVIDIA H200"; "" when the device does not say
  double flops = 0;         // per second, per device; 0 = unknown (MFU is then null)
  std::string source;       // "metrics.peak_tflops", "table", or "unknown"
};

// From the built-in table by the device's name (case-insensitive substrings, most specific first);
// 0 when the name is not in it.
double peak_flops_by_name(const std::string& name);

// `override_tflops` > 0 (metrics.peak_tflops) wins over the table; a CPU has no table entry.
DevicePeak device_peak(c10::Device device, double override_tflops);

}  // namespace agenttune
