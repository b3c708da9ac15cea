#pragma once
// Which device a rank computes on, from `dist.device` (training) or `--device` (generate, chat).
//
//   auto      the accelerator when one is visible, else the CPU
//   cpu       the CPU
//   cuda      cuda:<local rank> when at least local rank + 1 GPUs are visible (torchrun: every rank
//             sees the node's GPUs), else the one visible GPU (Slurm --gpus-per-task=1 gives each
//             task its own CUDA_VISIBLE_DEVICES)
//   cuda:N    that GPU
// An out-of-tree accelerator registered as PrivateUse1 under a name (the test suite's `fake`)
// takes the same forms under its name.
#include <c10/core/Device.h>

#include <string>

namespace agenttune::parallel {

struct DeviceSpec {
  enum class Kind { Auto, Cpu, Accelerator } kind = Kind::Auto;
  c10::DeviceType type = c10::DeviceType::CPU;  // for Accelerator
  int index = -1;                                // -1: by local rank
};

// Throws agenttune::Error naming `what` ("dist.device") and the accepted forms.
DeviceSpec parse_device_spec(const std::string& text, const std::string& what);

// The device for a rank with `local_rank`, given how many devices of the spec's type are visible
// (`visible`; for Auto, the CUDA count). Pure, so the rules are testable without a GPU.
c10::Device choose_device(const DeviceSpec& spec, int local_rank, int visible);

// parse + choose with this process's visible device counts, then makes it the thread's current
// device, so that nothing (a CUDA context, a communicator) lands on another GPU by default.
c10::Device select_device(const std::string& text, const std::string& what, int local_rank);

// How many devices of `type` this process sees (0 when the backend is not available).
int visible_devices(c10::DeviceType type);

}  // namespace agenttune::parallel
