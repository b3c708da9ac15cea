#pragma once
// PyTorch pickle checkpoints (torch.save zip format): `pytorch_model.bin` folders (Lemur ships
// these) and single state-dict files. Read through LibTorch's unpickler.
#include <filesystem>
#include <memory>

#include "agenttune/io/tensor_source.h"

namespace agenttune {

// Loads one torch.save'd state dict (str -> Tensor). Throws naming the file when it is not one.
NamedTensors load_torch_state_dict(const std::filesystem::path& path);

// `pytorch_model.bin.index.json` + shards if present, else `pytorch_model.bin`. Shards are loaded
// on first use of one of their tensors and kept.
std::unique_ptr<TensorSource> open_torch_bin_dir(const std::filesystem::path& dir);

}  // namespace agenttune
