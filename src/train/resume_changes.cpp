#include "agenttune/train/resume_changes.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <nlohmann/json.hpp>

#include "agenttune/util/files.h"

namespace agenttune {

namespace {

constexpr std::array<const char*, 11> kScheduleKeys = {
    "lr",    "min_lr_ratio", "warmup_steps", "warmup_start_ratio", "decay",         "max_steps",
    "beta1", "beta2",        "eps",          "weight_decay",       "clip_grad_norm"};

}  // namespace

std::vector<std::string> schedule_changes(const std::string& checkpoint_yaml, const std::string& run_yaml,
                                          int64_t step) {
  const YAML::Node before = YAML::Load(checkpoint_yaml)["train"], now = YAML::Load(run_yaml)["train"];
  std::vector<std::string> lines;
  if (!before.IsMap() || !now.IsMap()) return lines;
  for (const char* key : kScheduleKeys) {
    const YAML::Node a = before[key], b = now[key];
    // A key one side lacks reads as invalid, which only IsDefined() may be asked.
    if (!a.IsDefined() || !b.IsDefined() || !a.IsScalar() || !b.IsScalar() || a.Scalar() == b.Scalar()) continue;
    lines.push_back(fmt::format("resume: train.{} changed {} -> {} (the run continues from step {} with the new value)",
                                key, a.Scalar(), b.Scalar(), step));
  }
  return lines;
}

std::string checkpoint_config_yaml(const std::filesystem::path& checkpoint) {
  const auto meta = nlohmann::json::parse(read_text_file(checkpoint / "meta.json"));
  if (!meta.contains("config") || !meta["config"].contains("yaml")) return "";
  return meta["config"]["yaml"].get<std::string>();
}

}  // namespace agenttune
