#include "agenttune/train/stop_signal.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <mutex>

#include "agenttune/util/log.h"

namespace agenttune {

namespace {
// Set by the handlers and by the launcher watch's thread: lock-free, so both may touch it.
std::atomic<int> g_signal = 0;
static_assert(std::atomic<int>::is_always_lock_free);
struct sigaction g_old_term, g_old_int;

// The parent when the program was loaded, not when training starts: setup can take minutes
// (reading a checkpoint), and a launcher that dies meanwhile must still be noticed.
const pid_t g_parent_at_start = getppid();

void on_signal(int sig) { g_signal = sig; }

// Only torchrun's workers stop when their parent goes. torchrun starts each rank in a session of
// its own, so when it is SIGKILLed (OOM killer, a hard kill of the job) no signal reaches the
// ranks and they train on unseen, holding the devices and the output folder. Elsewhere the
// parent's death already has an owner: under srun the parent is slurmstepd, which takes its tasks
// down itself (and the sbatch script's SIGTERM protocol stays as it is); a run started from a
// terminal gets SIGHUP when the terminal goes, and one started under nohup, setsid or tmux is
// meant to outlive its shell. TORCHELASTIC_RUN_ID is set by torchrun for every worker, unlike
// RANK/LOCAL_RANK, which hand-made and Slurm launches set too.
bool watch_launcher() {
  const char* id = std::getenv("TORCHELASTIC_RUN_ID");
  return id != nullptr && *id != '\0';
}

// Polls getppid() rather than arming PR_SET_PDEATHSIG, which fires when the *thread* that forked
// the rank exits (any thread of the Python launcher) and never for a parent already dead.
void poll_parent(std::stop_token stop) {
  std::mutex m;
  std::condition_variable_any wake;
  std::unique_lock lock(m);
  while (!wake.wait_for(lock, stop, std::chrono::seconds(1), [&] { return stop.stop_requested(); })) {
    if (getppid() == g_parent_at_start) continue;
    log::warn("the launcher (parent pid {}) is gone: checkpointing and exiting as on SIGTERM", g_parent_at_start);
    int none = 0;
    g_signal.compare_exchange_strong(none, SIGTERM);
    return;
  }
}
}  // namespace

StopSignal::StopSignal() {
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &g_old_term);
  sigaction(SIGINT, &sa, &g_old_int);
  if (watch_launcher()) launcher_watch_ = std::jthread(poll_parent);
}

StopSignal::~StopSignal() {
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGINT, &g_old_int, nullptr);
}

bool StopSignal::requested() { return g_signal != 0; }
int StopSignal::signal_number() { return g_signal; }

}  // namespace agenttune
