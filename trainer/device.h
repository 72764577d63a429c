// Where the model runs and in what precision: `--device auto|cpu|cuda` and `--precision fp32|bf16` of
// `dgr train` (both stages), and `--device` of `dgr retrieve` and `dgr mine`. On CUDA every rank uses one
// GPU of its own: GPU index = local rank. Also the small host-memory collectives of a training step
// (token counts, logged losses, stop votes), which work with every comm backend. No LibTorch in this
// header (the launcher includes it); trainer/placement.h has the LibTorch side.
#pragma once

#include <string>

#include "comm/communicator.h"
#include "common/world.h"

namespace dgr::trainer {

struct DeviceChoice {
  bool cuda = false;
  int index = -1;  // the GPU when cuda (= the local rank), -1 on the CPU
  std::string str() const;  // "cpu" or "cuda:N"
  const char* kind() const { return cuda ? "cuda" : "cpu"; }
};

// "auto": cuda when LibTorch sees a CUDA GPU, else cpu; "cpu"; "cuda": GPU local_rank of this node.
// ConfigError when cuda is asked for (or chosen by auto) and this rank cannot have a GPU of its own: no GPU
// visible, a LibTorch without CUDA, or more ranks on the node than GPUs (the message names the rank, the
// local rank and the GPU count). Local, not collective; cheap, so commands may call it again.
DeviceChoice resolve_device(const std::string& requested, const World& world);

// `precision` is "fp32" or "bf16"; bf16 (autocast to bfloat16 for forward and loss) needs a CUDA device.
// ConfigError otherwise.
void check_precision(const std::string& precision, const DeviceChoice& device);

// ConfigError when the comm backend cannot reduce this device's gradients: nccl with the model on the CPU.
void check_backend(const std::string& backend, const DeviceChoice& device);

// Makes the GPU current for this thread (CUDA only; a no-op on the CPU), so that libraries that allocate
// on "the current device" use this rank's GPU rather than GPU 0.
void make_current(const DeviceChoice& device);

// The device of a training run, checked before anything is read: resolve_device, check_precision and
// check_backend, then make_current. Local.
DeviceChoice prepare_training_device(const std::string& requested, const std::string& precision,
                                     const std::string& backend, const World& world);

// Collectives on small host buffers that work with every backend: passed straight on when the
// communicator accepts host memory (ring, mpi), else copied through a temporary tensor on `device` (nccl).
// Collective, as the communicator's own calls.
void allreduce_host(comm::Communicator& communicator, comm::Buffer buffer, comm::ReduceOp op,
                    const DeviceChoice& device);
void allgather_host(comm::Communicator& communicator, comm::Buffer send, comm::Buffer recv,
                    const DeviceChoice& device);

}  // namespace dgr::trainer
