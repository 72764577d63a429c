// comm::Communicator: collectives over flat buffers {data, count, dtype, device}, with a deadline on
// every call. Implementations: "ring" (dgr's segmented, pipelined ring over MPI point-to-point), "mpi"
// (MPI_Allreduce etc., the reference), "nccl" (GPUs; built when DGR_HAVE_NCCL). World size 1 is the
// identity for every backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/world.h"

namespace dgr::comm {

enum class DType { kFloat32, kBFloat16, kInt32, kInt64 };
enum class Device { kCpu, kCuda };
enum class ReduceOp { kSum, kAverage };

size_t dtype_bytes(DType dtype);
const char* dtype_name(DType dtype);

// A flat buffer; the communicator never owns it. `count` is in elements, not bytes.
struct Buffer {
  void* data = nullptr;
  size_t count = 0;
  DType dtype = DType::kFloat32;
  Device device = Device::kCpu;
  size_t num_bytes() const { return count * dtype_bytes(dtype); }
};

struct Options {
  std::string backend = "ring";      // ring | mpi | nccl
  int64_t timeout_ms = 300000;       // deadline of every collective; when it passes the job ends non-zero
  size_t segment_bytes = 1 << 20;    // ring: pipeline segment size
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place. Every rank calls it with the same count, dtype and op, in the same order. kAverage divides
  // the sum by size(). bf16 travels as bf16; the reduction of every element is done in fp32.
  virtual void allreduce(Buffer buffer, ReduceOp op) = 0;
  // `buffer` of `root` is copied to every rank. Same count and dtype on every rank.
  virtual void broadcast(Buffer buffer, int root) = 0;
  // `recv` (count = size() * send.count) receives every rank's `send` in rank order.
  virtual void allgather(Buffer send, Buffer recv) = 0;
  virtual void barrier() = 0;

  // Whether buffers on `device` may be passed to this communicator. ring and mpi reduce host memory only,
  // nccl GPU memory only; callers holding buffers elsewhere stage them through a copy (the gradient
  // reducer stages GPU buckets through host memory for ring/mpi).
  virtual bool accepts(Device device) const { return device == Device::kCpu; }

  // Bytes and calls since construction (for benchmarks and logs).
  virtual uint64_t num_collectives() const = 0;

  // Host memory of at least num_bytes (4096-aligned) that the backend may reduce faster than other memory.
  // Collective: every rank calls it with the same num_bytes, in the same order (and free_shared likewise),
  // so it blocks until every rank has called it, without the deadline. A buffer from it, or any part of
  // one, may be passed to every call like any host buffer. With backend "ring" and every rank on one
  // node, an allreduce whose buffer lies inside such an allocation on every rank (at the same offset) is
  // done through shared memory instead of messages (see "The shared-memory path" in
  // comm/ring_communicator.cpp); elsewhere, and for the other backends, it is plain host memory (ring also
  // falls back to it, with a warning, when MPI cannot make the shared window, e.g. /dev/shm too small).
  // Throws SystemError when no memory can be had. The memory lives until free_shared or until
  // the communicator is destroyed, whichever comes first.
  virtual void* allocate_shared(size_t num_bytes);
  // Collective, like allocate_shared; `data` is what it returned on this rank (nullptr: nothing to free).
  virtual void free_shared(void* data);
};

// Makes the communicator named by options.backend over MPI_COMM_WORLD. Collective: every rank calls it
// with the same options. Throws ConfigError for an unknown or unbuilt backend.
std::unique_ptr<Communicator> make_communicator(const Options& options, const World& world);

}  // namespace dgr::comm
