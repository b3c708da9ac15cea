#pragma once
// A read-only, lazily loaded set of named tensors: a safetensors folder, a pytorch_model.bin
// folder, or a Meta consolidated.*.pth folder. The model loader asks for tensors by HF name and
// never needs to know which format they came from.
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agenttune/model/named_tensors.h"

namespace agenttune {

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  // Every tensor name, in a stable order.
  virtual std::vector<std::string> names() const = 0;
  virtual bool contains(const std::string& name) const = 0;
  // A CPU tensor (zero-copy where the format allows). Throws agenttune::Error naming the file and
  // the tensor when it is missing or unreadable.
  virtual at::Tensor get(const std::string& name) const = 0;
  // The file a tensor lives in (for error messages); the folder for a missing name.
  virtual std::string where(const std::string& name) const = 0;
};

}  // namespace agenttune
