#pragma once
// Key/value cache for generation: preallocated per layer to a maximum length, filled in place,
// so a decoding step costs no reallocation.
#include <ATen/core/Tensor.h>

#include <vector>

#include "agenttune/model/llama_config.h"

namespace agenttune {

struct LayerCache {
  at::Tensor k, v;     // [B, KV, max_len, hd]
  int64_t length = 0;  // filled positions
  // Appends new keys/values [B, KV, T, hd]; returns views of everything cached so far.
  std::pair<at::Tensor, at::Tensor> append(const at::Tensor& k_new, const at::Tensor& v_new);
};

struct KVCache {
  KVCache(const LlamaConfig& c, int64_t batch, int64_t max_len, c10::ScalarType dtype,
          const at::Device& device);
  std::vector<LayerCache> layers;
  int64_t max_len;
  int64_t length() const { return layers.empty() ? 0 : layers[0].length; }
};

}  // namespace agenttune
