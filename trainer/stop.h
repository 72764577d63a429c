// Agreeing on a stop: at a step boundary every rank shares how many stop signals it received (SIGUSR1 or
// SIGTERM, common/signals.h), so all ranks checkpoint and stop at the same step even when the signal
// reached only some of them.
#pragma once

#include "comm/communicator.h"

namespace dgr::trainer {

// Collective: every rank calls it at the same step boundary, in the same order relative to other
// collectives. Returns the largest number of stop requests any rank has received (0 = go on, 1 = checkpoint
// and stop, >= 2 = the same, urgently).
int agree_on_stop(comm::Communicator& communicator);

}  // namespace dgr::trainer
