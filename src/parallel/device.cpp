#include "agenttune/parallel/device.h"

#include <ATen/Context.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "agenttune/util/error.h"

namespace agenttune::parallel {

namespace {

// The PrivateUse1 backend's name when an out-of-tree device registered one, else "".
std::string private_use1_name() {
  std::string n = c10::get_privateuse1_backend(/*lower_case=*/true);
  return n == "privateuseone" ? std::string() : n;
}

std::string accepted_forms() {
  std::string extra = private_use1_name();
  return "auto, cpu, cuda, cuda:N" + (extra.empty() ? std::string() : ", " + extra + ", " + extra + ":N");
}

}  // namespace

DeviceSpec parse_device_spec(const std::string& text, const std::string& what) {
  if (text == "auto") return {};
  if (text == "cpu") return {DeviceSpec::Kind::Cpu};
  const auto colon = text.find(':');
  const std::string name = text.substr(0, colon);
  DeviceSpec spec{DeviceSpec::Kind::Accelerator};
  if (name == "cuda") spec.type = c10::DeviceType::CUDA;
  else if (!private_use1_name().empty() && name == private_use1_name()) spec.type = c10::DeviceType::PrivateUse1;
  else fail("{} '{}' is not one of: {}", what, text, accepted_forms());
  if (colon != std::string::npos) {
    const std::string idx = text.substr(colon + 1);
    if (idx.empty() || idx.size() > 3 || idx.find_first_not_of("0123456789") != std::string::npos)
      fail("{} '{}': the device index after ':' must be a number (forms: {})", what, text, accepted_forms());
    spec.index = std::stoi(idx);
  }
  return spec;
}

c10::Device choose_device(const DeviceSpec& spec, int local_rank, int visible) {
  if (spec.kind == DeviceSpec::Kind::Cpu) return c10::kCPU;
  if (spec.kind == DeviceSpec::Kind::Auto) {
    if (visible <= 0) return c10::kCPU;
    return choose_device({DeviceSpec::Kind::Accelerator, c10::DeviceType::CUDA, -1}, local_rank, visible);
  }
  const std::string type = c10::DeviceTypeName(spec.type, /*lower_case=*/true);
  if (visible <= 0) fail("the device is {} but no {} device is visible to this process", type, type);
  int index = spec.index;
  if (index < 0) {
    if (local_rank < visible) index = local_rank;
    else if (visible == 1) index = 0;  // one device per task: the launcher chose it
    else
      fail("local rank {} needs {}:{}, but this process sees only {} {} devices; start at most {} rank(s) per node, "
           "or give each rank one device (CUDA_VISIBLE_DEVICES, Slurm --gpus-per-task=1)",
           local_rank, type, local_rank, visible, type, visible);
  }
  if (index >= visible)
    fail("{}:{} does not exist: this process sees {} {} device(s) (indices 0..{})", type, index, visible, type,
         visible - 1);
  return c10::Device(spec.type, static_cast<c10::DeviceIndex>(index));
}

int visible_devices(c10::DeviceType type) {
  if (type == c10::DeviceType::CUDA) return at::hasCUDA() ? static_cast<int>(at::getNumGPUs()) : 0;
  if (!c10::impl::hasDeviceGuardImpl(type)) return 0;
  return static_cast<int>(c10::impl::getDeviceGuardImpl(type)->deviceCount());
}

c10::Device select_device(const std::string& text, const std::string& what, int local_rank) {
  const DeviceSpec spec = parse_device_spec(text, what);
  const auto type = spec.kind == DeviceSpec::Kind::Accelerator ? spec.type : c10::DeviceType::CUDA;
  c10::Device d = choose_device(spec, local_rank, spec.kind == DeviceSpec::Kind::Cpu ? 0 : visible_devices(type));
  if (!d.is_cpu()) c10::impl::getDeviceGuardImpl(d.type())->setDevice(d);
  return d;
}

}  // namespace agenttune::parallel
