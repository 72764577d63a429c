// dtype helpers and make_communicator: picks the backend named by options.backend.
#include "comm/communicator.h"

#include <algorithm>
#include <cstdlib>

#include "comm/mpi_communicator.h"
#include "comm/ring_communicator.h"
#include "common/error.h"
#ifdef DGR_HAVE_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace dgr::comm {

size_t dtype_bytes(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
  }
  DGR_CHECK(false, "unknown dtype {}", static_cast<int>(dtype));
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "fp32";
    case DType::kBFloat16: return "bf16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "?";
}

void* Communicator::allocate_shared(size_t num_bytes) {
  const size_t rounded = (std::max<size_t>(num_bytes, 1) + 4095) / 4096 * 4096;
  void* data = std::aligned_alloc(4096, rounded);
  DGR_CHECK_AS(SystemError, data != nullptr, "{} communicator cannot allocate {} bytes of host memory", name(),
               rounded);
  return data;
}

void Communicator::free_shared(void* data) { std::free(data); }

std::vector<std::string> Communicator::gather_bytes(const std::string&, int) {
  DGR_CHECK_AS(CommError, false, "the {} communicator has no gather_bytes: it moves device buffers only; send "
               "control traffic through a host communicator (comm::make_host_communicator)", name());
  return {};
}

void Communicator::broadcast_bytes(std::string&, int) {
  DGR_CHECK_AS(CommError, false, "the {} communicator has no broadcast_bytes: it moves device buffers only; send "
               "control traffic through a host communicator (comm::make_host_communicator)", name());
}

std::unique_ptr<Communicator> make_communicator(const Options& options, const World& world) {
  if (options.backend == "ring") return std::make_unique<detail::RingCommunicator>(options, world);
  if (options.backend == "mpi") return std::make_unique<detail::MpiCommunicator>(options, world);
  if (options.backend == "nccl") {
#ifdef DGR_HAVE_NCCL
    return make_nccl_communicator(options, world);
#else
    DGR_CHECK_AS(ConfigError, false, "backend 'nccl' is not built: this dgr was configured without CUDA/NCCL "
                 "(reconfigure with -DDGR_WITH_NCCL=ON on a machine with CUDA and NCCL, or use backend 'ring' "
                 "or 'mpi')");
#endif
  }
  DGR_CHECK_AS(ConfigError, false, "unknown comm backend '{}' (use ring, mpi or nccl)", options.backend);
  return nullptr;
}

std::unique_ptr<Communicator> make_host_communicator(const World& world, int64_t timeout_ms) {
  Options options;
  options.backend = "mpi";
  options.timeout_ms = timeout_ms;
  options.sleep_while_waiting = true;
  return std::make_unique<detail::MpiCommunicator>(options, world);
}

}  // namespace dgr::comm
