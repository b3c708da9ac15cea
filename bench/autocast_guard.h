#pragma once
// Autocast for a scope: the sharding bench's reference (the plain module, its fp32 parameters
// autocast to the compute dtype). Training does not use it: the sharded engine casts the gathered
// shards to model.compute_dtype itself (src/parallel/sharded_model.cpp).
#include <ATen/autocast_mode.h>

namespace agenttune {

class AutocastGuard {
 public:
  AutocastGuard(c10::ScalarType dtype, c10::DeviceType device)
      : on_(dtype != c10::ScalarType::Float), device_(device) {
    if (!on_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(device_);
    prev_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!on_) return;
    // The cast-weight cache lives for one forward: weights change every step.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool on_;
  c10::DeviceType device_;
  bool prev_enabled_ = false;
  c10::ScalarType prev_dtype_ = c10::ScalarType::Float;
};

}  // namespace agenttune
