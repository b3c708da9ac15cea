#pragma once
// Helpers for the config tests: write a YAML file into the test's scratch dir, and catch an
// expected agenttune::Error to assert on its text.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <string>

#include "agenttune/util/error.h"
#include "test_paths.h"

namespace agenttune::testing {

inline std::filesystem::path write_yaml(const std::string& name, const std::string& text) {
  auto path = scratch_dir() / name;
  std::ofstream(path) << text;
  return path;
}

// The message of the agenttune::Error `f` throws; fails the test (and returns "") if none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an agenttune::Error";
  return "";
}

}  // namespace agenttune::testing
