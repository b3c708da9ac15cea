#include "agenttune/parallel/rendezvous.h"

#include <gtest/gtest.h>

#include "agenttune/util/error.h"

using namespace agenttune;
using namespace agenttune::parallel;

namespace {

// Expects world_from_env to throw an Error whose message contains `needle`.
void expect_error(const Env& env, const std::string& needle) {
  try {
    world_from_env(env);
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

Env srun_env() {
  return {{"SLURM_PROCID", "9"},         {"SLURM_STEP_ID", "0"},          {"SLURM_NTASKS", "11"},
          {"SLURM_LOCALID", "1"},        {"SLURM_NODEID", "2"},           {"SLURM_TASKS_PER_NODE", "4(x2),3"},
          {"SLURM_JOB_ID", "123456"},    {"SLURM_JOB_NODELIST", "node[01-02,07],gpu5"}};
}

}  // namespace

TEST(Rendezvous, NoLauncherIsASingleProcess) {
  auto w = world_from_env({{"HOME", "/root"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}});
  EXPECT_EQ(w.launcher, "single");  // a batch step without srun is one process, not rank 0 of 8
  EXPECT_EQ(w.rank, 0);
  EXPECT_EQ(w.world_size, 1);
  EXPECT_EQ(w.local_world_size, 1);
  EXPECT_TRUE(w.is_main());
}

TEST(Rendezvous, Torchrun) {
  auto w = world_from_env({{"RANK", "5"},
                           {"WORLD_SIZE", "8"},
                           {"LOCAL_RANK", "1"},
                           {"LOCAL_WORLD_SIZE", "4"},
                           {"MASTER_ADDR", "10.0.0.7"},
                           {"MASTER_PORT", "29400"},
                           {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                           {"TORCHELASTIC_RESTART_COUNT", "2"},
                           {"SLURM_PROCID", "0"},  // torchrun inside Slurm: torchrun wins
                           {"SLURM_STEP_ID", "0"}});
  EXPECT_EQ(w.launcher, "torchrun");
  EXPECT_EQ(w.rank, 5);
  EXPECT_EQ(w.world_size, 8);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_world_size, 4);
  EXPECT_EQ(w.master_addr, "10.0.0.7");
  EXPECT_EQ(w.master_port, 29400);
  EXPECT_TRUE(w.agent_store);
  EXPECT_EQ(w.restart_count, 2);
  EXPECT_FALSE(w.is_main());
  EXPECT_EQ(w.describe(), "rank 5 of 8 (local 1 of 4, torchrun, master 10.0.0.7:29400)");
}

TEST(Rendezvous, HandLaunchDefaultsLocalToGlobal) {
  auto w = world_from_env({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1234"}});
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_world_size, 2);
  EXPECT_FALSE(w.agent_store);
}

TEST(Rendezvous, TorchrunErrorsNameTheVariable) {
  expect_error({{"RANK", "0"}}, "WORLD_SIZE is not set");
  expect_error({{"RANK", "x"}, {"WORLD_SIZE", "2"}}, "RANK='x' is not a non-negative integer");
  expect_error({{"RANK", "-1"}, {"WORLD_SIZE", "2"}}, "RANK='-1'");
  expect_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}},
               "RANK=2 is not below the world size 2");
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}, "MASTER_ADDR is not set");
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}, "MASTER_PORT is not set");
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}},
               "MASTER_PORT='70000' is not a TCP port");
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"},
                {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}},
               "LOCAL_RANK=2 is not below the local world size 2");
}

TEST(Rendezvous, SlurmSrunTask) {
  auto w = world_from_env(srun_env());
  EXPECT_EQ(w.launcher, "slurm");
  EXPECT_EQ(w.rank, 9);
  EXPECT_EQ(w.world_size, 11);
  EXPECT_EQ(w.local_rank, 1);
  EXPECT_EQ(w.local_world_size, 3);  // third node of "4(x2),3"
  EXPECT_EQ(w.master_addr, "node01");
  EXPECT_EQ(w.master_port, 10000 + 123456 % 20000);
  EXPECT_FALSE(w.agent_store);
}

TEST(Rendezvous, SlurmStepVariablesAndOverrides) {
  auto env = srun_env();
  env["SLURM_STEP_NUM_TASKS"] = "10";
  env["SLURM_STEP_TASKS_PER_NODE"] = "4,4,2";
  env["SLURM_STEP_NODELIST"] = "gpu[3-5]";
  auto w = world_from_env(env);
  EXPECT_EQ(w.world_size, 10);
  EXPECT_EQ(w.local_world_size, 2);
  EXPECT_EQ(w.master_addr, "gpu3");
  env["MASTER_ADDR"] = "head";
  env["MASTER_PORT"] = "29555";
  w = world_from_env(env);
  EXPECT_EQ(w.master_addr, "head");
  EXPECT_EQ(w.master_port, 29555);

  env = srun_env();
  env.erase("SLURM_TASKS_PER_NODE");
  env.erase("SLURM_NODEID");
  env["SLURM_NTASKS_PER_NODE"] = "4";
  EXPECT_EQ(world_from_env(env).local_world_size, 4);
}

TEST(Rendezvous, SlurmErrorsNameTheVariable) {
  auto env = srun_env();
  env.erase("SLURM_LOCALID");
  expect_error(env, "SLURM_LOCALID is not set");
  env = srun_env();
  env.erase("SLURM_NTASKS");
  expect_error(env, "SLURM_NTASKS");
  env = srun_env();
  env["SLURM_NODEID"] = "3";
  expect_error(env, "SLURM_NODEID=3 but SLURM_TASKS_PER_NODE='4(x2),3' lists 3 nodes");
  env = srun_env();
  env["SLURM_JOB_NODELIST"] = "node[01-";
  expect_error(env, "SLURM_JOB_NODELIST");
  env = srun_env();
  env.erase("SLURM_TASKS_PER_NODE");
  expect_error(env, "SLURM_NTASKS_PER_NODE");
}

TEST(Rendezvous, HostlistExpansion) {
  using V = std::vector<std::string>;
  EXPECT_EQ(expand_hostlist("gpu5"), V{"gpu5"});
  EXPECT_EQ(expand_hostlist("a,b"), (V{"a", "b"}));
  EXPECT_EQ(expand_hostlist("node[01-04,07],gpu5"), (V{"node01", "node02", "node03", "node04", "node07", "gpu5"}));
  EXPECT_EQ(expand_hostlist("n[8-11]"), (V{"n8", "n9", "n10", "n11"}));
  EXPECT_EQ(expand_hostlist("n[098-101]-ib"), (V{"n098-ib", "n099-ib", "n100-ib", "n101-ib"}));
  EXPECT_EQ(expand_hostlist("r[1-2]n[1,3]"), (V{"r1n1", "r1n3", "r2n1", "r2n3"}));
  EXPECT_EQ(expand_hostlist("x-[5]"), V{"x-5"});
  for (const char* bad : {"node[1-", "node1-2]", "node[a-b]", "node[3-1]", "node[]"})
    EXPECT_THROW(expand_hostlist(bad), Error) << bad;
}

TEST(Rendezvous, TasksPerNode) {
  EXPECT_EQ(expand_tasks_per_node("8"), std::vector<int>{8});
  EXPECT_EQ(expand_tasks_per_node("4(x2),3"), (std::vector<int>{4, 4, 3}));
  EXPECT_EQ(expand_tasks_per_node("2,1(x3)"), (std::vector<int>{2, 1, 1, 1}));
  for (const char* bad : {"", "x", "4(x", "4(x0)", "0"}) EXPECT_THROW(expand_tasks_per_node(bad), Error) << bad;
}
