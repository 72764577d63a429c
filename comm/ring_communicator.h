// The "ring" backend: dgr's segmented, pipelined ring over MPI point-to-point, and, for buffers from
// allocate_shared with every rank on one node, an allreduce through MPI shared windows (see the essay at the
// top of ring_communicator.cpp).
#pragma once

#include <cstdlib>
#include <memory>
#include <vector>

#include "comm/mpi_base.h"

namespace dgr::comm::detail {

class RingCommunicator final : public MpiCommunicatorBase {
 public:
  // Receives posted ahead of the one being reduced; also the number of reduce-scatter scratch slots.
  static constexpr size_t kNumSlots = 4;
  // Sends posted and not yet completed, at most.
  static constexpr size_t kMaxSendsInFlight = 4;

  // Collective: every rank constructs it with the same options. Throws ConfigError for a segment_bytes
  // outside [1, 1 GiB].
  RingCommunicator(const Options& options, const World& world);
  // After a failed collective MPI may still write into the scratch slots (a late peer): then they are leaked,
  // and so are the shared windows (a peer may still read them). Otherwise the shared windows still
  // allocated are freed (collectively): their buffers must not be used after this.
  ~RingCommunicator() override;
  const char* name() const override { return "ring"; }
  // bf16 travels as bf16; every addition is done in fp32 and rounded to bf16 (nearest even).
  void allreduce(Buffer buffer, ReduceOp op) override;
  // A pipelined chain root -> root+1 -> ... over segments of segment_bytes.
  void broadcast(Buffer buffer, int root) override;
  void allgather(Buffer send, Buffer recv) override;
  // With every rank on one node: MPI_Win_allocate_shared on the node communicator, and allreduce on these
  // buffers goes through shared memory (see "The shared-memory path" in the essay). Otherwise (several
  // nodes, one rank, or MPI cannot make shared windows) plain host memory.
  void* allocate_shared(size_t num_bytes) override;
  void free_shared(void* data) override;

 private:
  // One allocate_shared window: this rank's part and every rank's part, mapped here ([rank] = base).
  struct SharedRegion {
    uint64_t id = 0;  // the same on every rank (allocate_shared is collective)
    char* base = nullptr;
    size_t num_bytes = 0;
    std::vector<char*> bases;
    MPI_Win win = MPI_WIN_NULL;
  };
  struct ControlSlot;
  // Collective (called by allocate_shared): splits the node communicator and makes the control block once.
  // False when the ranks are not all on one node or MPI cannot make shared windows.
  bool open_node_shared();
  // Collective (blocking, no deadline; set-up only): whether `mine` holds on every rank.
  bool every_rank(bool mine);
  // The region holding [data, data + num_bytes), or nullptr.
  const SharedRegion* find_region(const void* data, size_t num_bytes) const;
  // The shared-memory allreduce; false when the ranks did not all publish the same shared buffer (then
  // every rank returns false and takes the message ring).
  bool shared_allreduce(Call& call, const Buffer& buffer, ReduceOp op);
  // Stores `target` in this rank's counter and waits until every rank's counter has reached it.
  void shared_barrier(Call& call, uint64_t target);

  struct RingPlan;
  // Runs the (step, segment) units of `plan`: see "Segments and the pipeline" in the essay.
  void run_ring(Call& call, const RingPlan& plan);
  char* slot(size_t index) { return scratch_.get() + index * slot_bytes_; }

  struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
  };
  size_t slot_bytes_ = 0;                        // one segment, rounded up
  std::unique_ptr<char[], FreeDeleter> scratch_;  // [kNumSlots * slot_bytes_] reduce-scatter receives

  int node_state_ = 0;               // 0: not looked at yet, 1: shared path available, -1: not available
  MPI_Comm node_comm_ = MPI_COMM_NULL;  // MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED)
  MPI_Win control_win_ = MPI_WIN_NULL;
  std::vector<ControlSlot*> control_;  // [rank], in the control window; empty: no shared path
  std::vector<SharedRegion> regions_;
  uint64_t next_region_id_ = 0;
  uint64_t shared_epoch_ = 0;  // shared-path entries so far (the same on every rank)
};

}  // namespace dgr::comm::detail
