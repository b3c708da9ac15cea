#include "agenttune/parallel/base_fingerprint.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>

#include "agenttune/util/seeded.h"

namespace agenttune::parallel {

namespace {

// Every kStride-th element of a group (by its index in the group, so the sample is the same at
// every world size): a prime, so the sample walks over every column of the power-of-two-wide
// matrices. 1/61 of a 7B base is read once, at startup.
constexpr int64_t kStride = 61;

}  // namespace

std::vector<ModelUnit> model_units(LlamaForCausalLMImpl& m) {
  std::vector<ModelUnit> units;
  units.push_back({"embed", {{"model.embed_tokens.weight", m.model->embed_tokens->weight}}});
  for (size_t i = 0; i < m.model->layers.size(); ++i) {
    ModelUnit u{"layers." + std::to_string(i), {}};
    for (auto& p : m.model->layers[i]->named_parameters())
      u.params.emplace_back("model.layers." + std::to_string(i) + "." + p.key(), p.value());
    units.push_back(std::move(u));
  }
  ModelUnit head{"head", {{"model.norm.weight", m.model->norm->weight}}};
  // A tied head has no weight of its own: the embedding's unit holds the one table.
  if (m.lm_head) head.params.emplace_back("lm_head.weight", m.lm_head->weight);
  units.push_back(std::move(head));
  return units;
}

// sum over the sampled elements i (fp32 bits b_i) of b_i * odd(mix(i, group)), modulo 2^64: a
// sum, so the order of the ranks' slices does not matter, and padding (zeros) adds nothing.
uint64_t fingerprint_slice(const at::Tensor& slice, int64_t offset, int64_t numel, const std::string& group) {
  const int64_t end = std::min(offset + slice.numel(), numel);
  const int64_t first = (offset + kStride - 1) / kStride * kStride;
  if (first >= end) return 0;
  auto index = at::arange(first, end, kStride, at::kLong);
  auto values = slice.scalar_type() == at::kByte ? slice.to(at::kCPU)
                                                 : slice.to(at::kCPU, at::kFloat).contiguous().view(at::kInt);
  auto bits = values.index_select(0, index - offset).to(at::kLong);
  // splitmix64's increment times (index + the group's hash), made odd; int64 wraps as uint64 does.
  auto mix = ((index + static_cast<int64_t>(hash_text(group))) * static_cast<int64_t>(0x9E3779B97F4A7C15ull))
                 .bitwise_or(1);
  return static_cast<uint64_t>((bits * mix).sum().item<int64_t>());
}

std::string fingerprint_hex(uint64_t sum) { return fmt::format("{:016x}", sum); }

std::string base_fingerprint(LlamaForCausalLMImpl& model) {
  at::NoGradGuard ng;
  uint64_t sum = 0;
  bool any = false;
  for (auto& unit : model_units(model)) {
    for (bool bytes : {false, true}) {  // the engine's two frozen groups, in its order
      std::vector<at::Tensor> parts;
      for (auto& [name, p] : unit.params)
        if (!p.requires_grad() && (p.scalar_type() == at::kByte) == bytes)
          parts.push_back(p.detach().reshape({-1}).to(at::kCPU, bytes ? at::kByte : at::kFloat));
      if (parts.empty()) continue;
      any = true;
      auto flat = at::cat(parts);
      sum += fingerprint_slice(flat, 0, flat.numel(), unit.name + (bytes ? kFrozenBytesGroup : kFrozenGroup));
    }
  }
  return any ? fingerprint_hex(sum) : "";
}

}  // namespace agenttune::parallel
