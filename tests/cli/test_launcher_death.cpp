// A rank whose launcher is SIGKILLed: under torchrun, which starts each rank in a session of its
// own so that no signal reaches it, the rank checkpoints at its current step and exits 143 within
// seconds instead of training on unseen. Started by anything else (a shell, srun) it runs on as
// before: the shell's SIGHUP, nohup or Slurm decide its fate.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include "agenttune/util/files.h"
#include "cli_test_util.h"
#include "test_paths.h"

namespace agenttune {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// What torchrun sets for a one-rank run (the watch keys on TORCHELASTIC_RUN_ID).
constexpr const char* kTorchrunEnv =
    "TORCHELASTIC_RUN_ID=test RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 GROUP_RANK=0";

// The test process adopts the orphaned rank (a child subreaper), so it can wait for its exit code
// as torchrun would have.
class LauncherDeath : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    root_ = testing::scratch_dir();
    testing::TinyRun r;
    r.vocab = 2048, r.ffn = 176, r.max_positions = 128, r.max_steps = 100000, r.global_batch = 4;
    r.code_docs = 120, r.text_docs = 30, r.max_doc_len = 200;
    r.checkpoint = "{interval: 2, keep_last: 2}";
    cfg_ = testing::write_tiny_run(root_, r);
  }
  void TearDown() override {
    if (rank_ > 0 && exit_code(0) < 0) {
      kill(rank_, SIGKILL);
      testing::wait_exit(rank_);
    }
    if (launcher_ > 0) {  // a test that failed before killing it: its wait ends with the rank
      kill(launcher_, SIGKILL);
      testing::wait_exit(launcher_);
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0);
  }

  // `/bin/sh` starts the run in the background with `env` and waits, as a launcher does; returns
  // once the run has written its step-2 checkpoint.
  void launch(const std::string& env) {
    const fs::path script = root_ / "launcher.sh", pid_file = root_ / "rank.pid";
    std::ofstream(script) << env << " " << testing::agenttune_bin() << " train --config " << cfg_.string()
                          << " --no-progress --set output_dir=" << (root_ / "run").string() << " > " << log().string()
                          << " 2>&1 &\necho $! > " << pid_file.string() << ".tmp\nmv " << pid_file.string()
                          << ".tmp " << pid_file.string() << "\nwait\n";
    launcher_ = testing::spawn("/bin/sh " + script.string());
    ASSERT_GT(launcher_, 0);
    ASSERT_TRUE(testing::wait_for(pid_file, 30)) << "the launcher did not start the run";
    rank_ = std::stoi(read_text_file(pid_file));
    ASSERT_TRUE(testing::wait_for(root_ / "run/checkpoints/step_00000002/COMPLETE", 60)) << read_text_file(log());
  }

  void kill_launcher() {
    ASSERT_EQ(kill(launcher_, SIGKILL), 0);
    EXPECT_EQ(testing::wait_exit(launcher_), 128 + SIGKILL);
    launcher_ = -1;
  }

  // The rank's exit code once it has exited within `seconds`; -1 while it still runs.
  int exit_code(double seconds) {
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    do {
      int status = 0;
      if (waitpid(rank_, &status, WNOHANG) == rank_) {
        rank_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (Clock::now() < end);
    return -1;
  }

  fs::path log() const { return root_ / "rank.log"; }

  fs::path root_, cfg_;
  pid_t launcher_ = -1, rank_ = -1;
};

TEST_F(LauncherDeath, TorchrunRankCheckpointsAndExitsWhenItsLauncherIsKilled) {
  launch(kTorchrunEnv);
  if (HasFatalFailure()) return;
  const pid_t launcher = launcher_;
  kill_launcher();
  if (HasFatalFailure()) return;
  const auto killed = Clock::now();
  const int rc = exit_code(10);
  const double seconds = std::chrono::duration<double>(Clock::now() - killed).count();
  const std::string out = read_text_file(log());
  ASSERT_EQ(rc, 143) << "the rank did not stop within 10 s of its launcher's death:\n" << out;
  EXPECT_LT(seconds, 5.0);
  EXPECT_NE(out.find("the launcher (parent pid " + std::to_string(launcher) + ") is gone"), std::string::npos) << out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(stop signal at step (\d+): last checkpoint \S*step_(\d+))")))
      << out;
  EXPECT_EQ(std::stoll(m[1].str()), std::stoll(m[2].str())) << "not checkpointed at its current step:\n" << out;
  EXPECT_TRUE(fs::exists(root_ / ("run/checkpoints/step_" + m[2].str() + "/COMPLETE")));
  EXPECT_GT(std::stoll(m[1].str()), 2);
  EXPECT_LT(std::stoll(m[1].str()), 100000);
}

// The old behaviour, kept where it is right: without torchrun's environment the orphan runs on.
TEST_F(LauncherDeath, RankOfAnotherLauncherRunsOn) {
  launch("RANK=0 WORLD_SIZE=1 LOCAL_RANK=0");
  if (HasFatalFailure()) return;
  kill_launcher();
  if (HasFatalFailure()) return;
  // Three polls of the watch, were it armed.
  ASSERT_EQ(exit_code(3), -1) << "stopped though no torchrun launched it:\n" << read_text_file(log());
  ASSERT_EQ(kill(rank_, SIGTERM), 0);
  EXPECT_EQ(exit_code(30), 143);
  EXPECT_EQ(read_text_file(log()).find("is gone"), std::string::npos);
}

}  // namespace
}  // namespace agenttune
