#pragma once
// AdamW over fp32 master parameters (decoupled weight decay, none on norms and other 1-D
// tensors), stepped with at::_fused_adamw_ (one fused kernel per dtype/device group, CPU and
// CUDA). The state is plain named tensors so checkpoints and sharding can address it.
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "agenttune/io/tensor_source.h"

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
  // Parameters with dim() < 2 (norm weights) get no weight decay.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions opts);

  // One update at learning rate `lr`. Parameters whose grad is undefined are skipped.
  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const;

  // "exp_avg.<name>", "exp_avg_sq.<name>", "step.<name>" tensors, for checkpoints.
  NamedTensors state() const;
  // Restores state(); a missing name or a shape mismatch throws naming the tensor.
  void load_state(const NamedTensors& state);
  const std::vector<std::pair<std::string, at::Tensor>>& params() const;

 private:
  struct Group;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_, steps_;
  AdamWOptions opts_;
  int64_t steps_taken_ = 0;
};

// Scales all grads so their global L2 norm is at most max_norm (no-op if max_norm <= 0).
// Returns the norm before clipping (fp32, may be inf/nan: the caller decides to skip the step).
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);
// The global L2 norm of the grads, without clipping.
double grad_norm(const std::vector<at::Tensor>& params);

}  // namespace agenttune
