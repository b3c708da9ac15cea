#pragma once
// Ordered name -> tensor list: the unit in which weights move between the model, the sharding
// engine, the optimizer, checkpoints and the checkpoint files (io/ reads and writes it).
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace agenttune {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

}  // namespace agenttune
