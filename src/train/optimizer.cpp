#include "agenttune/train/optimizer.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <map>
#include <tuple>

#include "agenttune/util/error.h"

namespace agenttune {

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions opts, std::vector<bool> decay)
    : params_(std::move(params)), decay_(std::move(decay)), opts_(opts) {
  if (decay_.empty())
    for (const auto& [name, p] : params_) decay_.push_back(p.dim() >= 2);
  if (decay_.size() != params_.size())
    fail("AdamW: {} decay flags for {} parameters", decay_.size(), params_.size());
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : params_) {
    exp_avg_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(at::zeros_like(p, at::MemoryFormat::Preserve));
    // The fused kernel reads the step from a float32 tensor on the parameter's device.
    steps_.push_back(at::zeros({1}, p.options().dtype(at::kFloat)));
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  struct Group {
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  };
  // The fused kernel needs one device and dtype per call; weight decay is per call too.
  std::map<std::tuple<std::string, at::ScalarType, bool>, Group> groups;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i].second;
    const auto& g = p.grad();
    if (!g.defined()) continue;
    auto& grp = groups[{p.device().str(), p.scalar_type(), decay_[i]}];
    grp.params.push_back(p);
    grp.grads.push_back(g);
    grp.exp_avgs.push_back(exp_avg_[i]);
    grp.exp_avg_sqs.push_back(exp_avg_sq_[i]);
    grp.steps.push_back(steps_[i]);
  }
  for (auto& [key, grp] : groups) {
    // As torch.optim's _fused_adamw: the caller advances the steps, the kernel reads them.
    at::_foreach_add_(grp.steps, 1);
    at::_fused_adamw_(grp.params, grp.grads, grp.exp_avgs, grp.exp_avg_sqs, /*max_exp_avg_sqs=*/{},
                      grp.steps, lr, opts_.beta1, opts_.beta2,
                      std::get<2>(key) ? opts_.weight_decay : 0.0, opts_.eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  }
  ++steps_taken_;
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) p.mutable_grad().reset();
}

NamedTensors AdamW::state() const {
  NamedTensors out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    out.emplace_back("exp_avg." + name, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + name, exp_avg_sq_[i]);
    out.emplace_back("step." + name, steps_[i]);
  }
  return out;
}

void AdamW::load_state(const NamedTensors& state) {
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  auto take = [&](const std::string& name, at::Tensor& dst) {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail("optimizer state: tensor '{}' is missing", name);
    if (it->second.sizes() != dst.sizes())
      fail("optimizer state: tensor '{}' has shape [{}], expected [{}]", name,
           fmt::join(it->second.sizes(), ", "), fmt::join(dst.sizes(), ", "));
    dst.copy_(it->second);
  };
  at::NoGradGuard no_grad;
  int64_t most = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    take("exp_avg." + name, exp_avg_[i]);
    take("exp_avg_sq." + name, exp_avg_sq_[i]);
    take("step." + name, steps_[i]);
    most = std::max(most, static_cast<int64_t>(steps_[i].item<float>()));
  }
  steps_taken_ = most;
}

}  // namespace agenttune
