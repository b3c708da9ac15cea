#pragma once
// The model area's large allocations (the parameters, the KV cache) made so that running out of
// memory is one agenttune::Error naming what was being allocated and its size, not LibTorch's raw
// allocator message (exit 3) or the OOM killer.
#include <c10/core/Device.h>

#include <functional>
#include <string>

namespace agenttune::model_detail {

// Asks the host for `bytes` first when `device` is the CPU (an allocation overcommit lets through
// is killed when first touched, with no message), then runs `allocate`, turning an allocation
// failure (std::bad_alloc, LibTorch's out-of-memory errors) into "cannot allocate WHAT: ...".
void allocate_named(const std::string& what, double bytes, const c10::Device& device,
                    const std::function<void()>& allocate);

}  // namespace agenttune::model_detail
