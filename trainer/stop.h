// Agreeing on a stop: at a step boundary every rank shares how many stop signals it received (SIGUSR1 or
// SIGTERM, common/signals.h), so all ranks checkpoint and stop at the same step even when the signal
// reached only some of them.
#pragma once

#include "comm/communicator.h"
#include "trainer/device.h"

namespace dgr::trainer {

// Collective: every rank calls it at the same step boundary, in the same order relative to other
// collectives. Returns the largest number of stop requests any rank has received (0 = go on, 1 = checkpoint
// and stop, >= 2 = the same, urgently). `device`: where the vote travels when the communicator takes GPU
// buffers only (nccl); unused otherwise.
int agree_on_stop(comm::Communicator& communicator, const DeviceChoice& device = {});

}  // namespace dgr::trainer
