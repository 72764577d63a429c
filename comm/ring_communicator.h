// The "ring" backend: dgr's segmented, pipelined ring over MPI point-to-point (see the essay at the top of
// ring_communicator.cpp).
#pragma once

#include <cstdlib>
#include <memory>

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
  // After a failed collective MPI may still write into the scratch slots (a late peer): then they are leaked.
  ~RingCommunicator() override;
  const char* name() const override { return "ring"; }
  // bf16 travels as bf16; every addition is done in fp32 and rounded to bf16 (nearest even).
  void allreduce(Buffer buffer, ReduceOp op) override;
  // A pipelined chain root -> root+1 -> ... over segments of segment_bytes.
  void broadcast(Buffer buffer, int root) override;
  void allgather(Buffer send, Buffer recv) override;

 private:
  struct RingPlan;
  // Runs the (step, segment) units of `plan`: see "Segments and the pipeline" in the essay.
  void run_ring(Call& call, const RingPlan& plan);
  char* slot(size_t index) { return scratch_.get() + index * slot_bytes_; }

  struct FreeDeleter {
    void operator()(char* p) const { std::free(p); }
  };
  size_t slot_bytes_ = 0;                        // one segment, rounded up
  std::unique_ptr<char[], FreeDeleter> scratch_;  // [kNumSlots * slot_bytes_] reduce-scatter receives
};

}  // namespace dgr::comm::detail
