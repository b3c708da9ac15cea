#pragma once
// The message of the agenttune::Error that `f` throws ("" when it throws none): for tests that
// check what a user would read.
#include <functional>
#include <string>

#include "agenttune/util/error.h"

namespace agenttune::testing {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace agenttune::testing
