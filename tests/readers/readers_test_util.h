#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "agenttune/readers/dataset.h"
#include "agenttune/util/error.h"
#include "test_paths.h"

namespace agenttune::testing {

inline std::filesystem::path sample(const std::string& name) {
  return source_dir() / "data" / "samples" / name;
}

inline std::filesystem::path write_file(const std::filesystem::path& dir, const std::string& name,
                                        const std::string& text) {
  auto p = dir / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

inline std::vector<Conversation> read_paths(std::vector<std::filesystem::path> paths,
                                            DatasetFormat format, ReadReport& report,
                                            ReadPolicies policies = {}) {
  DatasetSpec spec{"test", std::move(paths), format, std::move(policies)};
  return read_dataset(spec, report);
}

inline std::vector<Conversation> read_one(const std::filesystem::path& path, DatasetFormat format,
                                          ReadPolicies policies = {}) {
  ReadReport report;
  return read_paths({path}, format, report, std::move(policies));
}

// The error message read_dataset throws, or "" when it does not throw.
inline std::string error_of(const std::filesystem::path& path, DatasetFormat format,
                            ReadPolicies policies = {}) {
  try {
    read_one(path, format, std::move(policies));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline void expect_contains(const std::string& text, std::initializer_list<std::string> parts) {
  for (const auto& p : parts) EXPECT_NE(text.find(p), std::string::npos) << "missing '" << p << "' in: " << text;
}

}  // namespace agenttune::testing
