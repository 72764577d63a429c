// Private to comm/: check macros for CUDA runtime and NCCL calls. On failure they throw dgr::CommError
// naming the call, the library's error name and string, file:line, the rank, the host and the GPU.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

#include <fmt/format.h>

#include "common/error.h"
#include "common/world.h"

namespace dgr::comm::detail {

// " [rank R of N on HOST, GPU d]": always names the host and the GPU, even for one rank, since a CUDA
// failure is usually about one machine.
inline std::string gpu_where_suffix() {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    device = -1;
    cudaGetLastError();  // cudaGetDevice's own failure must not stick to the next call
  }
  const World* world = World::current();
  std::string gpu = device >= 0 ? fmt::format("GPU {}", device) : std::string("no current GPU");
  if (world == nullptr) return fmt::format(" [{}]", gpu);
  return fmt::format(" [rank {} of {} on {}, {}]", world->rank(), world->size(), world->host(), gpu);
}

// What to look at for each NCCL failure class.
inline const char* nccl_hint(ncclResult_t result) {
  switch (result) {
    case ncclUnhandledCudaError: return "a CUDA call inside NCCL failed (driver/GPU problem; see dmesg and nvidia-smi)";
    case ncclSystemError: return "a system call or the network failed (run with NCCL_DEBUG=WARN for details)";
    case ncclInternalError: return "NCCL internal error (run with NCCL_DEBUG=INFO and report it)";
    case ncclInvalidArgument: return "an argument is wrong (buffer not on this GPU? count or dtype differ between ranks?)";
    case ncclInvalidUsage: return "wrong use of NCCL (two ranks on one GPU? communicator already aborted?)";
    case ncclRemoteError: return "another rank failed or disconnected: look at the other ranks' logs first";
    default: return "run with NCCL_DEBUG=WARN for details";
  }
}

inline std::string nccl_failure(const char* file, int line, const char* call, ncclResult_t result) {
  const char* last_error = ncclGetLastError(nullptr);
  std::string last = last_error != nullptr ? last_error : "";
  for (char& c : last) {
    if (c == '\n' || c == '\r') c = ' ';  // the message stays one line
  }
  while (!last.empty() && last.back() == ' ') last.pop_back();
  return ::dgr::detail::where(file, line) +
         fmt::format("{} failed: {} ({}){}{}; {}", call, ncclGetErrorString(result), static_cast<int>(result),
                     last.empty() ? "" : ": ", last, nccl_hint(result)) +
         gpu_where_suffix();
}

inline std::string cuda_failure(const char* file, int line, const char* call, cudaError_t error) {
  return ::dgr::detail::where(file, line) +
         fmt::format("{} failed: {}: {}", call, cudaGetErrorName(error), cudaGetErrorString(error)) +
         gpu_where_suffix();
}

}  // namespace dgr::comm::detail

// Wraps a CUDA runtime call; anything but cudaSuccess throws CommError.
#define DGR_CUDA_CHECK(call)                                                                           \
  do {                                                                                                 \
    cudaError_t dgr_cuda_rc_ = (call);                                                                 \
    if (dgr_cuda_rc_ != cudaSuccess) {                                                                 \
      throw ::dgr::CommError(::dgr::comm::detail::cuda_failure(__FILE__, __LINE__, #call, dgr_cuda_rc_)); \
    }                                                                                                  \
  } while (0)

// Wraps an NCCL call; anything but ncclSuccess throws CommError.
#define DGR_NCCL_CHECK(call)                                                                           \
  do {                                                                                                 \
    ncclResult_t dgr_nccl_rc_ = (call);                                                                \
    if (dgr_nccl_rc_ != ncclSuccess) {                                                                 \
      throw ::dgr::CommError(::dgr::comm::detail::nccl_failure(__FILE__, __LINE__, #call, dgr_nccl_rc_)); \
    }                                                                                                  \
  } while (0)

// For calls on a non-blocking communicator, which may also return ncclInProgress (the caller then waits
// with ncclCommGetAsyncError).
#define DGR_NCCL_CHECK_ASYNC(call)                                                                     \
  do {                                                                                                 \
    ncclResult_t dgr_nccl_rc_ = (call);                                                                \
    if (dgr_nccl_rc_ != ncclSuccess && dgr_nccl_rc_ != ncclInProgress) {                               \
      throw ::dgr::CommError(::dgr::comm::detail::nccl_failure(__FILE__, __LINE__, #call, dgr_nccl_rc_)); \
    }                                                                                                  \
  } while (0)
