// cuda_device_count and cuda_device_available (nccl_communicator.h): whether this process sees a GPU.
#include "comm/nccl_communicator.h"

#ifdef DGR_HAVE_NCCL

#include <cuda_runtime_api.h>

namespace dgr::comm {

int cuda_device_count() {
  int count = 0;
  cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // clear it: "no GPU" is an answer here, not a failure to carry into later calls
    return 0;
  }
  return count;
}

bool cuda_device_available() { return cuda_device_count() > 0; }

}  // namespace dgr::comm

#endif  // DGR_HAVE_NCCL
