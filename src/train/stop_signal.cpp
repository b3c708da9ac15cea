#include "agenttune/train/stop_signal.h"

#include <csignal>

namespace agenttune {

namespace {
volatile std::sig_atomic_t g_signal = 0;
struct sigaction g_old_term, g_old_int;

void on_signal(int sig) { g_signal = sig; }
}  // namespace

StopSignal::StopSignal() {
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &g_old_term);
  sigaction(SIGINT, &sa, &g_old_int);
}

StopSignal::~StopSignal() {
  sigaction(SIGTERM, &g_old_term, nullptr);
  sigaction(SIGINT, &g_old_int, nullptr);
}

bool StopSignal::requested() { return g_signal != 0; }
int StopSignal::signal_number() { return g_signal; }

}  // namespace agenttune
