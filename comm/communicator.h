// comm::Communicator: collectives over flat buffers {data, count, dtype, device}, with a deadline on
// every call. Implementations: "ring" (dgr's segmented, pipelined ring over MPI point-to-point), "mpi"
// (MPI_Allreduce etc., the reference), "nccl" (GPUs; built when DGR_HAVE_NCCL). World size 1 is the
// identity for every backend. make_host_communicator gives control traffic (agreement steps, results
// gathered to rank 0, barriers) its own communicator, apart from gradient traffic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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
  // Wait with short sleeps (up to 2 ms) instead of spinning, and warn once a minute while waiting: for
  // control traffic, where a rank may wait long for another's work (make_host_communicator sets it).
  bool sleep_while_waiting = false;
  // gather_bytes / broadcast_bytes: at most this many bytes in one MPI call (MPI counts are int).
  size_t max_call_bytes = size_t{1} << 30;
};

// Deadline of control traffic by default: long enough for a rank to wait while another writes a large
// checkpoint or builds an index, short of a job hanging for ever.
inline constexpr int64_t kControlTimeoutMs = 30 * 60 * 1000;

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
  // Variable-size byte strings to `root`: root gets every rank's `mine`, [rank]; other ranks get an empty
  // vector. Every rank calls it with the same root, in the same order; the sizes may differ (0 too).
  // Host communicators ("ring", "mpi") implement it; the default throws CommError (make a host
  // communicator for it with make_host_communicator).
  virtual std::vector<std::string> gather_bytes(const std::string& mine, int root);
  // `message` of `root` (any length) replaces `message` on every other rank. Same root on every rank.
  // Like gather_bytes, host communicators only.
  virtual void broadcast_bytes(std::string& message, int root);

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

// A communicator for control traffic: backend "mpi" on its own duplicate of MPI_COMM_WORLD (it never meets
// another communicator's messages, e.g. gradients on a communication thread), host memory, sleeping while
// it waits, with a deadline of `timeout_ms` on every call. Collective: every rank calls it, in the same
// order. Use one per thread: like every communicator it runs one collective at a time.
std::unique_ptr<Communicator> make_host_communicator(const World& world, int64_t timeout_ms = kControlTimeoutMs);

}  // namespace dgr::comm
