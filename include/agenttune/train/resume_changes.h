#pragma once
// A resume may change the learning-rate schedule and the optimizer's settings (a longer run, a
// lower rate): the run continues from the checkpoint's step with the new values. That is
// legitimate, but never unseen: a later resume without the override silently jumps back.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace agenttune {

// One line per train.<key> of the schedule (lr, min_lr_ratio, warmup_steps, warmup_start_ratio,
// decay, max_steps) or the optimizer (beta1, beta2, eps, weight_decay, clip_grad_norm) whose value
// in `run_yaml` differs from `checkpoint_yaml` (both resolved configs as dump_config writes them),
// with the old and the new value; a key the checkpoint's config lacks is not compared.
std::vector<std::string> schedule_changes(const std::string& checkpoint_yaml, const std::string& run_yaml,
                                          int64_t step);

// The resolved configuration a checkpoint folder stores in its meta.json ("" when it has none).
std::string checkpoint_config_yaml(const std::filesystem::path& checkpoint);

}  // namespace agenttune
