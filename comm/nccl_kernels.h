// Private to comm/: the element-wise kernels of the NCCL send/recv ring (nccl_kernels.cu), launched
// asynchronously on the communicator's stream. Each returns the launch's cudaError_t (check it with
// DGR_CUDA_CHECK); a count of 0 launches nothing.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "comm/communicator.h"

namespace dgr::comm::kernels {

// accumulator[i] += incoming[i] for i < count; bf16 is added in fp32 and rounded once per call.
cudaError_t add_into(void* accumulator, const void* incoming, size_t count, DType dtype, cudaStream_t stream);

// values[i] /= divisor for i < count (integers: truncating division, as ncclAvg does; floats and bf16 in fp32).
cudaError_t divide(void* values, size_t count, DType dtype, int divisor, cudaStream_t stream);

}  // namespace dgr::comm::kernels
