// Stop requests from the scheduler: SIGUSR1 (Slurm's --signal=USR1@N) and SIGTERM (preemption, scancel)
// set a flag that the training loop reads at step boundaries; a second signal asks to exit right after the
// checkpoint. The handlers only store to lock-free atomics (async-signal-safe).
#pragma once

namespace dgr::signals {

// Installs the SIGUSR1 and SIGTERM handlers (idempotent).
void install_stop_handlers();

// Signals received since install (0, 1, 2, ...): 1 = checkpoint and stop at the next step boundary,
// >= 2 = the same, without any further work after the checkpoint.
int stop_requests();

// The signal number of the last request (0 if none), for the log line.
int last_signal();

// Tests only: forget received signals.
void reset_for_testing();

}  // namespace dgr::signals
