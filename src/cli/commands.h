#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agenttune/config/scalars.h"

namespace agenttune::cli {

// An enum's names from its one table (EnumNames<E>), for CLI::IsMember: a flag that spells an enum
// accepts exactly what the config key does, listed in the same order.
template <class E>
std::vector<std::string> enum_names() {
  std::vector<std::string> names;
  for (const auto& [value, name] : EnumNames<E>::values) names.emplace_back(name);
  return names;
}

// A subcommand: `attach` adds it (and its flags) to the app, `run` executes it once parsed.
struct Command {
  std::function<CLI::App*(CLI::App&)> attach_fn;
  std::function<int()> run;
  CLI::App* sub = nullptr;
  void attach(CLI::App& app) { sub = attach_fn(app); }
  bool selected() const { return sub != nullptr && sub->parsed(); }
};

Command init_command();
Command generate_command();
Command info_command();
Command train_command();
Command export_command();
Command prepare_command();
Command plan_command();
Command inspect_command();
Command config_docs_command();
Command chat_command();
Command eval_command();

inline std::vector<Command> all_commands() {
  return {init_command(), prepare_command(), train_command(), export_command(), generate_command(), chat_command(), eval_command(), info_command(), plan_command(),
          inspect_command(), config_docs_command()};
}

}  // namespace agenttune::cli
