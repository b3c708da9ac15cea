#include "agenttune/model/kv_cache.h"

#include <ATen/ATen.h>

#include "agenttune/util/error.h"
#include "allocation.h"

namespace agenttune {

KVCache::KVCache(const LlamaConfig& c, int64_t batch, int64_t max_len_, c10::ScalarType dtype,
                 const at::Device& device)
    : max_len(max_len_) {
  auto opts = at::TensorOptions().dtype(dtype).device(device);
  // k and v of every layer; in double, as a --max-new-tokens of 10^12 must be sized, not overflow.
  const double bytes = 2.0 * static_cast<double>(c.num_hidden_layers) * static_cast<double>(batch) *
                       static_cast<double>(c.num_key_value_heads) * static_cast<double>(max_len) *
                       static_cast<double>(c.resolved_head_dim()) * static_cast<double>(c10::elementSize(dtype));
  const std::string what = fmt::format("a KV cache of {} positions ({} layers, batch {})", max_len,
                                       c.num_hidden_layers, batch);
  model_detail::allocate_named(what, bytes, device, [&] {
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
      LayerCache lc;
      lc.k = at::empty({batch, c.num_key_value_heads, max_len, c.resolved_head_dim()}, opts);
      lc.v = at::empty_like(lc.k);
      layers.push_back(std::move(lc));
    }
  });
}

std::pair<at::Tensor, at::Tensor> LayerCache::append(const at::Tensor& k_new,
                                                     const at::Tensor& v_new) {
  int64_t t = k_new.size(2);
  if (length + t > k.size(2))
    fail("KV cache full: {} cached + {} new positions exceed its {} slots", length, t, k.size(2));
  k.narrow(2, length, t).copy_(k_new);
  v.narrow(2, length, t).copy_(v_new);
  length += t;
  return {k.narrow(2, 0, length), v.narrow(2, 0, length)};
}

}  // namespace agenttune
