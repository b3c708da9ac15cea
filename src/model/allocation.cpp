#include "allocation.h"

#include <c10/util/Exception.h>

#include <new>
#include <string_view>

#include "agenttune/util/error.h"
#include "agenttune/util/host_memory.h"

namespace agenttune::model_detail {

namespace {

bool is_allocation_failure(const c10::Error& e) {
  const std::string_view msg = e.what_without_backtrace();
  return dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr || msg.find("alloc") != std::string_view::npos ||
         msg.find("out of memory") != std::string_view::npos;
}

}  // namespace

void allocate_named(const std::string& what, double bytes, const c10::Device& device,
                    const std::function<void()>& allocate) {
  if (device.is_cpu()) require_host_memory(bytes, what);
  try {
    allocate();
  } catch (const std::bad_alloc&) {
    fail("cannot allocate {}: {} do not fit in memory", what, format_bytes(bytes));
  } catch (const c10::Error& e) {
    if (!is_allocation_failure(e)) throw;
    fail("cannot allocate {}: {} do not fit in {} memory ({})", what, format_bytes(bytes),
         device.is_cpu() ? "host" : device.str(), e.what_without_backtrace());
  }
}

}  // namespace agenttune::model_detail
