#pragma once
// SIGTERM/SIGINT (Slurm preemption, Ctrl-C) set a flag the loop checks between steps, so the run
// checkpoints and exits cleanly instead of dying mid-step.
namespace agenttune {

class StopSignal {
 public:
  StopSignal();   // installs the handlers
  ~StopSignal();  // restores the previous ones
  static bool requested();
  static int signal_number();
};

}  // namespace agenttune
