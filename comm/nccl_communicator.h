// The "nccl" backend of comm::Communicator: one GPU per local rank, collectives on device buffers with a
// deadline on every call (a non-blocking NCCL communicator, polled and aborted when the deadline passes).
// Built only when DGR_HAVE_NCCL; the header itself needs neither CUDA nor NCCL headers.
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "common/world.h"

namespace dgr::comm {

#ifdef DGR_HAVE_NCCL

// True when this process can use a CUDA GPU: cudaGetDeviceCount succeeds and finds at least one. Any
// CUDA error (no driver, driver too old, no device) is "false", never an exception. Local, not collective.
bool cuda_device_available();

// Number of CUDA GPUs this process sees; 0 on any CUDA error.
int cuda_device_count();

// How allreduce, broadcast and allgather are carried out.
enum class NcclAlgorithm {
  kNccl,          // ncclAllReduce / ncclBroadcast / ncclAllGather (NCCL picks ring, tree, NVLS, ...)
  kSendRecvRing,  // dgr's own ring from ncclSend/ncclRecv (reduce-scatter + allgather), for tests/benchmarks
};

// The "nccl" backend. Collective: every rank calls it with the same options (and algorithm). Selects GPU
// local_rank % device count, broadcasts rank 0's ncclUniqueId over MPI_COMM_WORLD and creates the NCCL
// communicator within options.timeout_ms. Throws CommError on every rank when some rank has no GPU or a
// node has more ranks than GPUs, and on any CUDA/NCCL failure. Buffers passed to it must be device
// memory on that GPU (Device::kCuda); CPU buffers are a ConfigError (use the ring or mpi backend). A call
// starts after the work already queued on the legacy default stream and returns when its result is in
// place; data written on other CUDA streams must be synchronised by the caller first. Not thread-safe:
// one thread calls it at a time.
std::unique_ptr<Communicator> make_nccl_communicator(const Options& options, const World& world,
                                                     NcclAlgorithm algorithm = NcclAlgorithm::kNccl);

#endif  // DGR_HAVE_NCCL

}  // namespace dgr::comm
