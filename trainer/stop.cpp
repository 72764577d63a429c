// agree_on_stop and StopVote (see stop.h): one small allgather per step boundary.
#include "trainer/stop.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <vector>

#include "common/signals.h"

namespace dgr::trainer {

int agree_on_stop(comm::Communicator& communicator, const DeviceChoice& device) {
  int32_t mine = signals::stop_requests();
  std::vector<int32_t> all(communicator.size());
  allgather_host(communicator, comm::Buffer{&mine, 1, comm::DType::kInt32},
                 comm::Buffer{all.data(), all.size(), comm::DType::kInt32}, device);
  return *std::max_element(all.begin(), all.end());
}

StopVote::StopVote(comm::Communicator& communicator, const DeviceChoice& device, const World& world)
    : communicator_(communicator), device_(device), test_signal_rank_(world.rank() == std::min(1, world.size() - 1)) {
  if (const char* step = std::getenv("DGR_TEST_STOP_AT_STEP")) test_stop_step_ = std::atoll(step);
}

bool StopVote::agree(int64_t step) {
  if (test_stop_step_ > 0 && step == test_stop_step_ && test_signal_rank_) std::raise(SIGUSR1);
  return agree_on_stop(communicator_, device_) > 0;
}

}  // namespace dgr::trainer
