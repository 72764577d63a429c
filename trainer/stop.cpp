// agree_on_stop (see stop.h): one small allgather per step boundary.
#include "trainer/stop.h"

#include <algorithm>
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

}  // namespace dgr::trainer
