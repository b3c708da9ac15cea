#pragma once
// Errors raised at the boundaries (files, configs, the command line). The message is what a user
// reads: it names the file, the record or key, and what was expected.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace agenttune {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace agenttune
