#pragma once
// SIGTERM/SIGINT (Slurm preemption, Ctrl-C) set a flag the loop checks between steps, so the run
// checkpoints and exits cleanly instead of dying mid-step. Under torchrun, the launcher's death
// sets the same flag (see watch_launcher in stop_signal.cpp for why only there).
#include <thread>

namespace agenttune {

class StopSignal {
 public:
  StopSignal();   // installs the handlers and, under torchrun, starts watching the launcher
  ~StopSignal();  // restores the previous ones
  static bool requested();
  static int signal_number();

 private:
  std::jthread launcher_watch_;
};

}  // namespace agenttune
