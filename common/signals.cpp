// SIGUSR1/SIGTERM -> atomic stop flag (see signals.h).
#include "common/signals.h"

#include <atomic>
#include <csignal>

namespace dgr::signals {
namespace {
std::atomic<int> g_requests{0};
std::atomic<int> g_last_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "signal handlers need lock-free atomics");

extern "C" void on_stop_signal(int signal_number) {
  g_last_signal.store(signal_number, std::memory_order_relaxed);
  g_requests.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

void install_stop_handlers() {
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

int stop_requests() { return g_requests.load(std::memory_order_relaxed); }
int last_signal() { return g_last_signal.load(std::memory_order_relaxed); }
void reset_for_testing() {
  g_requests.store(0);
  g_last_signal.store(0);
}

}  // namespace dgr::signals
