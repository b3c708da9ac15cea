#include "agenttune/parallel/rendezvous.h"

#include <fmt/format.h>

#include <charconv>
#include <optional>

#include "agenttune/util/error.h"

extern char** environ;

namespace agenttune::parallel {
namespace {

std::optional<std::string> get(const Env& env, const std::string& key) {
  auto it = env.find(key);
  if (it == env.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

std::optional<long long> parse_int(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  long long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

int int_var(const Env& env, const std::string& key, std::string_view launcher) {
  auto v = get(env, key);
  if (!v) fail("{} launch: environment variable {} is not set", launcher, key);
  auto n = parse_int(*v);
  if (!n || *n < 0 || *n > 1'000'000'000)
    fail("{} launch: environment variable {}='{}' is not a non-negative integer", launcher, key, *v);
  return static_cast<int>(*n);
}

// The first of `keys` that is set, with its name (for error messages).
std::optional<std::pair<std::string, std::string>> first_of(const Env& env,
                                                           std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (auto v = get(env, k)) return std::make_pair(std::string(k), *v);
  return std::nullopt;
}

int port_from(const std::string& key, const std::string& value) {
  auto n = parse_int(value);
  if (!n || *n < 1 || *n > 65535) fail("environment variable {}='{}' is not a TCP port (1-65535)", key, value);
  return static_cast<int>(*n);
}

void check_ranges(const WorldInfo& w, std::string_view rank_var, std::string_view local_var) {
  if (w.world_size < 1) fail("{} launch: world size is {}, expected at least 1", w.launcher, w.world_size);
  if (w.rank >= w.world_size)
    fail("{} launch: {}={} is not below the world size {}", w.launcher, rank_var, w.rank, w.world_size);
  if (w.local_world_size < 1 || w.local_world_size > w.world_size)
    fail("{} launch: local world size {} is not within 1..{}", w.launcher, w.local_world_size, w.world_size);
  if (w.local_rank >= w.local_world_size)
    fail("{} launch: {}={} is not below the local world size {}", w.launcher, local_var, w.local_rank,
         w.local_world_size);
}

WorldInfo from_torchrun(const Env& env) {
  WorldInfo w;
  w.launcher = "torchrun";
  w.rank = int_var(env, "RANK", w.launcher);
  w.world_size = int_var(env, "WORLD_SIZE", w.launcher);
  // Hand-made launches (one node, no torchrun) often set only RANK/WORLD_SIZE.
  w.local_rank = get(env, "LOCAL_RANK") ? int_var(env, "LOCAL_RANK", w.launcher) : w.rank;
  w.local_world_size =
      get(env, "LOCAL_WORLD_SIZE") ? int_var(env, "LOCAL_WORLD_SIZE", w.launcher) : w.world_size;
  if (w.world_size > 1) {
    auto addr = get(env, "MASTER_ADDR");
    if (!addr) fail("torchrun launch: environment variable MASTER_ADDR is not set (WORLD_SIZE={})", w.world_size);
    auto port = get(env, "MASTER_PORT");
    if (!port) fail("torchrun launch: environment variable MASTER_PORT is not set (WORLD_SIZE={})", w.world_size);
    w.master_addr = *addr;
    w.master_port = port_from("MASTER_PORT", *port);
  }
  w.agent_store = get(env, "TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  if (get(env, "TORCHELASTIC_RESTART_COUNT"))
    w.restart_count = int_var(env, "TORCHELASTIC_RESTART_COUNT", w.launcher);
  check_ranges(w, "RANK", "LOCAL_RANK");
  return w;
}

WorldInfo from_slurm(const Env& env) {
  WorldInfo w;
  w.launcher = "slurm";
  w.rank = int_var(env, "SLURM_PROCID", w.launcher);
  auto ntasks = first_of(env, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"});
  if (!ntasks) fail("slurm launch: none of SLURM_STEP_NUM_TASKS, SLURM_NTASKS, SLURM_NPROCS is set");
  w.world_size = int_var(env, ntasks->first, w.launcher);
  w.local_rank = int_var(env, "SLURM_LOCALID", w.launcher);

  // Nodes may carry different task counts ("4(x2),3"), so index by this task's node.
  int node = get(env, "SLURM_NODEID") ? int_var(env, "SLURM_NODEID", w.launcher) : 0;
  if (auto per = first_of(env, {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"})) {
    std::vector<int> counts;
    try {
      counts = expand_tasks_per_node(per->second);
    } catch (const Error& e) {
      fail("slurm launch: {}: {}", per->first, e.what());
    }
    if (node >= static_cast<int>(counts.size()))
      fail("slurm launch: SLURM_NODEID={} but {}='{}' lists {} nodes", node, per->first, per->second,
           counts.size());
    w.local_world_size = counts[node];
  } else if (get(env, "SLURM_NTASKS_PER_NODE")) {
    w.local_world_size = int_var(env, "SLURM_NTASKS_PER_NODE", w.launcher);
  } else {
    fail("slurm launch: none of SLURM_STEP_TASKS_PER_NODE, SLURM_TASKS_PER_NODE, SLURM_NTASKS_PER_NODE is set");
  }

  if (auto addr = get(env, "MASTER_ADDR")) {
    w.master_addr = *addr;
  } else if (auto list = first_of(env, {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})) {
    std::vector<std::string> hosts;
    try {
      hosts = expand_hostlist(list->second);
    } catch (const Error& e) {
      fail("slurm launch: {}: {}", list->first, e.what());
    }
    if (hosts.empty()) fail("slurm launch: {}='{}' names no host", list->first, list->second);
    w.master_addr = hosts.front();
  } else if (w.world_size > 1) {
    fail("slurm launch: neither MASTER_ADDR nor SLURM_JOB_NODELIST/SLURM_NODELIST is set");
  }

  if (auto port = get(env, "MASTER_PORT")) {
    w.master_port = port_from("MASTER_PORT", *port);
  } else if (get(env, "SLURM_JOB_ID")) {
    // Two jobs sharing a node must not race for one port; stay below Linux's ephemeral range.
    w.master_port = 10000 + int_var(env, "SLURM_JOB_ID", w.launcher) % 20000;
  }
  check_ranges(w, "SLURM_PROCID", "SLURM_LOCALID");
  return w;
}

}  // namespace

Env process_env() {
  Env env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string_view::npos) env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

std::string WorldInfo::describe() const {
  return fmt::format("rank {} of {} (local {} of {}, {}, master {}:{})", rank, world_size, local_rank,
                     local_world_size, launcher, master_addr, master_port);
}

WorldInfo world_from_env(const Env& env) {
  if (get(env, "RANK") || get(env, "WORLD_SIZE")) return from_torchrun(env);
  // SLURM_PROCID is also set in the batch step itself (one process running the sbatch script);
  // only an srun step (which sets SLURM_STEP_ID) is one rank of a multi-task job.
  if (get(env, "SLURM_PROCID") && (get(env, "SLURM_STEP_ID") || get(env, "SLURM_STEPID"))) return from_slurm(env);
  return WorldInfo{};
}

namespace {

// Splits at commas that are not inside brackets.
std::vector<std::string_view> split_top(std::string_view s, std::string_view whole) {
  std::vector<std::string_view> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '[') ++depth;
    if (s[i] == ']' && --depth < 0) fail("hostlist '{}': unmatched ']'", whole);
    if (s[i] == ',' && depth == 0) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth != 0) fail("hostlist '{}': unmatched '['", whole);
  out.push_back(s.substr(start));
  return out;
}

void expand_one(std::string_view name, std::string_view whole, std::vector<std::string>& out) {
  auto open = name.find('[');
  if (open == std::string_view::npos) {
    if (!name.empty()) out.emplace_back(name);
    return;
  }
  auto close = name.find(']', open);
  std::string_view prefix = name.substr(0, open), body = name.substr(open + 1, close - open - 1);
  std::string_view suffix = name.substr(close + 1);
  for (std::string_view range : split_top(body, whole)) {
    auto dash = range.find('-');
    std::string_view lo = range.substr(0, dash);
    std::string_view hi = dash == std::string_view::npos ? lo : range.substr(dash + 1);
    auto a = parse_int(lo), b = parse_int(hi);
    if (lo.empty() || !a || !b || *a < 0 || *b < *a)
      fail("hostlist '{}': bad range '{}' (expected N or N-M with N <= M)", whole, range);
    if (*b - *a > 100000) fail("hostlist '{}': range '{}' is implausibly large", whole, range);
    for (long long v = *a; v <= *b; ++v) {
      std::string host = fmt::format("{}{:0{}}{}", prefix, v, lo.size(), suffix);
      expand_one(host, whole, out);
    }
  }
}

}  // namespace

std::vector<std::string> expand_hostlist(std::string_view list) {
  std::vector<std::string> out;
  for (std::string_view item : split_top(list, list)) expand_one(item, list, out);
  return out;
}

std::vector<int> expand_tasks_per_node(std::string_view spec) {
  std::vector<int> out;
  for (std::string_view item : split_top(spec, spec)) {
    std::string_view count = item, times = "1";
    if (auto p = item.find("(x"); p != std::string_view::npos) {
      if (item.back() != ')') fail("tasks-per-node '{}': bad item '{}'", spec, item);
      count = item.substr(0, p);
      times = item.substr(p + 2, item.size() - p - 3);
    }
    auto c = parse_int(count), t = parse_int(times);
    if (!c || !t || *c < 1 || *t < 1 || *t > 100000)
      fail("tasks-per-node '{}': bad item '{}' (expected N or N(xM))", spec, item);
    out.insert(out.end(), static_cast<size_t>(*t), static_cast<int>(*c));
  }
  return out;
}

}  // namespace agenttune::parallel
