// Real processes: torchrun (its agent serves the store) and hand-made launches (rank 0 serves it),
// plus a rank that crashes or stalls mid-run, which must make its peer exit non-zero with a
// message naming the collective, within the timeout.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "test_paths.h"

namespace t = agenttune::testing;

namespace {

const std::string kSmoke = AGENTTUNE_PARALLEL_SMOKE;

// A port that was free a moment ago (the kernel's pick); good enough for a test.
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

struct Rank {
  int rc = -1;
  std::string log;
};

// Starts two ranks by hand (RANK/WORLD_SIZE/MASTER_*; no torchrun, so rank 0 hosts the store),
// each under `timeout 60` so a hang fails the test instead of blocking ctest.
std::vector<Rank> launch_two(const std::string& args, double* seconds) {
  auto dir = t::scratch_dir();
  std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port()) + " WORLD_SIZE=2";
  std::string cmd;
  for (int r : {1, 0})
    cmd += "(" + env + " RANK=" + std::to_string(r) + " timeout 60 " + kSmoke + " " + args + " > " +
           (dir / ("r" + std::to_string(r) + ".log")).string() + " 2>&1; echo $? > " +
           (dir / ("r" + std::to_string(r) + ".rc")).string() + ")" + (r == 1 ? " & " : "; wait");
  auto t0 = std::chrono::steady_clock::now();
  t::run_command(cmd);
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<Rank> ranks(2);
  for (int r = 0; r < 2; ++r) {
    ranks[r].rc = std::stoi("0" + slurp(dir / ("r" + std::to_string(r) + ".rc")));
    ranks[r].log = slurp(dir / ("r" + std::to_string(r) + ".log"));
  }
  return ranks;
}

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

}  // namespace

TEST(MultiProcess, TorchrunTwoRanks) {
  auto torchrun = t::source_dir() / ".venv" / "bin" / "torchrun";
  if (!std::filesystem::exists(torchrun)) GTEST_SKIP() << "no torchrun at " << torchrun << " (run scripts/setup.sh)";
  std::string out;
  // --standalone picks a free port for the agent's store, so parallel ctest runs do not collide.
  int rc = t::run_command("timeout 120 " + torchrun.string() + " --no-python --standalone --nproc-per-node 2 " +
                              kSmoke + " --timeout-s 30",
                          &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "parallel_smoke ok rank 0 of 2 (local 0 of 2, torchrun)")) << out;
  EXPECT_TRUE(contains(out, "parallel_smoke ok rank 1 of 2 (local 1 of 2, torchrun)")) << out;
}

TEST(MultiProcess, HandLaunchWithRankZeroServingTheStore) {
  double s = 0;
  auto ranks = launch_two("--timeout-s 30", &s);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(ranks[r].rc, 0) << ranks[r].log;
    EXPECT_TRUE(contains(ranks[r].log, "parallel_smoke ok rank " + std::to_string(r) + " of 2")) << ranks[r].log;
  }
}

class PeerCrash : public ::testing::TestWithParam<int> {};

TEST_P(PeerCrash, SurvivorExitsNonZeroNamingTheCollective) {
  const int dead = GetParam(), alive = 1 - dead;
  double s = 0;
  auto ranks = launch_two("--timeout-s 5 --die-after-first " + std::to_string(dead), &s);
  EXPECT_EQ(ranks[dead].rc, 7) << ranks[dead].log;
  EXPECT_EQ(ranks[alive].rc, 2) << ranks[alive].log;
  EXPECT_TRUE(contains(ranks[alive].log, "all_reduce of 'max rank' on rank " + std::to_string(alive) + " of 2"))
      << ranks[alive].log;
  EXPECT_LT(s, 5 + 10.0) << "the survivor took longer than the 5 s timeout plus startup";
}

INSTANTIATE_TEST_SUITE_P(DeadRank, PeerCrash, ::testing::Values(0, 1));

TEST(MultiProcess, StalledPeerMakesTheOtherTimeOut) {
  double s = 0;
  auto ranks = launch_two("--timeout-s 3 --hang-after-first 1", &s);
  EXPECT_EQ(ranks[0].rc, 2) << ranks[0].log;
  EXPECT_TRUE(contains(ranks[0].log, "all_reduce of 'max rank' on rank 0 of 2 timed out after 3 s")) << ranks[0].log;
  // The stalled rank wakes to a group whose peer has gone and fails too, instead of hanging.
  EXPECT_EQ(ranks[1].rc, 2) << ranks[1].log;
  EXPECT_LT(s, 25.0);
}
