// Element-wise kernels of the NCCL send/recv ring: add a received segment into the local one, and divide
// by the world size for averages. Compiled by nvcc through comm/nccl.cmake.
#include "comm/nccl_kernels.h"

#include <cuda_bf16.h>

#include <cstdint>

namespace dgr::comm::kernels {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr size_t kMaxBlocks = 65535;  // grid-stride loops cover the rest

template <typename T>
__global__ void add_kernel(T* accumulator, const T* incoming, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    accumulator[i] += incoming[i];
  }
}

__global__ void add_bf16_kernel(__nv_bfloat16* accumulator, const __nv_bfloat16* incoming, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    accumulator[i] = __float2bfloat16(__bfloat162float(accumulator[i]) + __bfloat162float(incoming[i]));
  }
}

template <typename T>
__global__ void divide_int_kernel(T* values, size_t count, T divisor) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    values[i] /= divisor;
  }
}

__global__ void divide_f32_kernel(float* values, size_t count, float divisor) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    values[i] /= divisor;
  }
}

__global__ void divide_bf16_kernel(__nv_bfloat16* values, size_t count, float divisor) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    values[i] = __float2bfloat16(__bfloat162float(values[i]) / divisor);
  }
}

unsigned int num_blocks(size_t count) {
  size_t blocks = (count + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<unsigned int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

}  // namespace

cudaError_t add_into(void* accumulator, const void* incoming, size_t count, DType dtype, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const unsigned int blocks = num_blocks(count);
  switch (dtype) {
    case DType::kFloat32:
      add_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<float*>(accumulator),
                                                          static_cast<const float*>(incoming), count);
      break;
    case DType::kBFloat16:
      add_bf16_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<__nv_bfloat16*>(accumulator),
                                                               static_cast<const __nv_bfloat16*>(incoming), count);
      break;
    case DType::kInt32:
      add_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<int32_t*>(accumulator),
                                                          static_cast<const int32_t*>(incoming), count);
      break;
    case DType::kInt64:
      add_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<int64_t*>(accumulator),
                                                          static_cast<const int64_t*>(incoming), count);
      break;
  }
  return cudaGetLastError();
}

cudaError_t divide(void* values, size_t count, DType dtype, int divisor, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const unsigned int blocks = num_blocks(count);
  switch (dtype) {
    case DType::kFloat32:
      divide_f32_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<float*>(values), count,
                                                                 static_cast<float>(divisor));
      break;
    case DType::kBFloat16:
      divide_bf16_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<__nv_bfloat16*>(values), count,
                                                                  static_cast<float>(divisor));
      break;
    case DType::kInt32:
      divide_int_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<int32_t*>(values), count,
                                                                 static_cast<int32_t>(divisor));
      break;
    case DType::kInt64:
      divide_int_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(static_cast<int64_t*>(values), count,
                                                                 static_cast<int64_t>(divisor));
      break;
  }
  return cudaGetLastError();
}

}  // namespace dgr::comm::kernels
