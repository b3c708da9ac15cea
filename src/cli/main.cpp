// agenttune <verb>: the command line users script against. Each verb lives in its own file
// (cmd_<verb>.cpp) and only parses flags and calls the areas.
#include <CLI/CLI.hpp>
#include "agenttune/util/log.h"

#include <c10/util/Exception.h>

#include <filesystem>

#include "agenttune/util/error.h"
#include "agenttune/version.h"
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"agenttune: turn a Llama-2 checkpoint into an agent model"};
  app.set_version_flag("--version", std::string("agenttune ") + AGENTTUNE_VERSION);
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "debug logging");

  std::vector<agenttune::cli::Command> commands = agenttune::cli::all_commands();
  for (auto& c : commands) c.attach(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints the message; its own codes (105 for a missing --config file, ...) become the
    // one code every user error has. --help and --version are ParseErrors with code 0.
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (verbose) agenttune::log::set_level(agenttune::log::Level::Debug);
  try {
    for (auto& c : commands)
      if (c.selected()) return c.run();
  } catch (const agenttune::Error& e) {
    agenttune::log::error("{}", e.what());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // The user's files or disk (permissions, a file where a folder belongs, no space): what()
    // names the operation, the paths and the OS's reason.
    agenttune::log::error("{}", e.what());
    return 2;
  } catch (const c10::Error& e) {
    // A LibTorch check failed on user data; its first line says which.
    agenttune::log::error("{}", e.what_without_backtrace());
    return 3;
  } catch (const std::exception& e) {
    agenttune::log::error("{}", e.what());
    return 3;
  }
  return 0;
}
