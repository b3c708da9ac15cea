#pragma once
// AdamW over fp32 master parameters (decoupled weight decay, none on norms and other 1-D
// tensors), stepped with at::_fused_adamw_ (one fused kernel per dtype/device group, CPU and
// CUDA). The state is plain named tensors so checkpoints and sharding can address it.
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "agenttune/model/named_tensors.h"

namespace agenttune {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  // `params` are the fp32 master tensors (requires_grad, .grad() filled before step()).
  // `decay[i]` says whether params[i] gets weight decay; empty: those with dim() >= 2 do (norm
  // weights and other vectors do not). Sharded training passes it explicitly: its flat shards are
  // 1-D whatever they hold.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions opts, std::vector<bool> decay = {});

  // One update at learning rate `lr`. Parameters whose grad is undefined are skipped (their
  // per-parameter step count does not advance, as in torch.optim.AdamW).
  void step(double lr);
  // Drops the grads (set_to_none, torch's default): the next backward writes instead of adding.
  void zero_grad();
  // Calls to step() since construction, or the largest per-parameter step after load_state().
  int64_t steps_taken() const { return steps_taken_; }

  // "exp_avg.<name>", "exp_avg_sq.<name>", "step.<name>" tensors, for checkpoints. The step is a
  // float32 tensor of shape [1] (torch keeps a 0-d one; [1] survives every file format).
  // The tensors are the live state (no copy): write them out before the next step().
  NamedTensors state() const;
  // Restores state() (copied into the existing tensors, so they keep their device); a missing
  // name or a shape mismatch throws agenttune::Error naming the tensor.
  void load_state(const NamedTensors& state);
  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }
  const AdamWOptions& options() const { return opts_; }

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_, steps_;
  std::vector<bool> decay_;
  AdamWOptions opts_;
  int64_t steps_taken_ = 0;
};

}  // namespace agenttune
