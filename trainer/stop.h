// Agreeing on a stop: at a step boundary every rank shares how many stop signals it received (SIGUSR1 or
// SIGTERM, common/signals.h), so all ranks checkpoint and stop at the same step even when the signal
// reached only some of them.
#pragma once

#include <cstdint>

#include "comm/communicator.h"
#include "common/world.h"
#include "trainer/device.h"

namespace dgr::trainer {

// Collective: every rank calls it at the same step boundary, in the same order relative to other
// collectives. Returns the largest number of stop requests any rank has received (0 = go on, 1 = checkpoint
// and stop, >= 2 = the same, urgently). `device`: where the vote travels when the communicator takes GPU
// buffers only (nccl); unused otherwise.
int agree_on_stop(comm::Communicator& communicator, const DeviceChoice& device = {});

// The training loop's vote, once per step: agree_on_stop > 0. Tests only: with DGR_TEST_STOP_AT_STEP=N in
// the environment, rank min(1, size - 1) sends itself SIGUSR1 after step N, as a scheduler would (the one
// place that reads it; tests/stage1_pipeline_test.sh and distill_pipeline_test.sh use it).
class StopVote {
 public:
  StopVote(comm::Communicator& communicator, const DeviceChoice& device, const World& world);
  // Collective: true when every rank is to checkpoint and stop after `step`.
  bool agree(int64_t step);

 private:
  comm::Communicator& communicator_;
  DeviceChoice device_;
  bool test_signal_rank_ = false;
  int64_t test_stop_step_ = 0;
};

}  // namespace dgr::trainer
