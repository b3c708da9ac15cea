#pragma once
// RoPE's inverse frequencies for a config, as transformers computes them: theta ** -(2i / head_dim)
// per pair of the head, then rope_scaling's rescaling (linear: every frequency divided by the
// factor; llama3: long wavelengths divided by it, short ones kept, the band between smoothed).
#include <ATen/core/Tensor.h>

#include "agenttune/model/llama_config.h"

namespace agenttune {

// float32 [head_dim / 2] on `device`, computed there (no host copy), with transformers' ops and
// their order so the fp32 bits agree.
at::Tensor rope_inverse_frequencies(const LlamaConfig& c, const c10::Device& device);

}  // namespace agenttune
