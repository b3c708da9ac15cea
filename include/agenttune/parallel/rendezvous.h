#pragma once
// Who am I in the job? Read from the launcher's environment: torchrun (or anything that sets the
// same variables by hand), else a Slurm srun task, else a single process. The environment is a
// parameter so that every launcher's layout can be tested without launching anything.
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace agenttune::parallel {

using Env = std::map<std::string, std::string>;

// A snapshot of this process's environment.
Env process_env();

struct WorldInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "single";  // torchrun | slurm | single
  // torchrun's elastic agent already serves a TCPStore at master_addr:master_port, so every rank
  // (rank 0 included) must connect as a client instead of starting its own server.
  bool agent_store = false;
  // Bumped by torchrun on each restart; keys in a reused agent store are prefixed with it so a
  // restarted group never reads the previous attempt's rendezvous keys.
  int restart_count = 0;

  bool is_main() const { return rank == 0; }
  // "rank 1 of 4 (local 1 of 2, torchrun, master node01:29500)"
  std::string describe() const;
};

// Throws agenttune::Error naming the offending variable (missing, not an integer, out of range).
WorldInfo world_from_env(const Env& env);

// Slurm hostlist expansion, e.g. "node[01-03,07],gpu5" -> node01 node02 node03 node07 gpu5.
// Zero padding follows the range's first bound, as Slurm does. Several bracket groups in one
// name ("r[1-2]n[1-2]") expand as a product.
std::vector<std::string> expand_hostlist(std::string_view list);

// SLURM_TASKS_PER_NODE style counts: "4(x2),3" -> {4, 4, 3}.
std::vector<int> expand_tasks_per_node(std::string_view spec);

}  // namespace agenttune::parallel
