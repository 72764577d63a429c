// The "mpi" backend: MPI's own non-blocking collectives (MPI_Iallreduce, MPI_Ibcast, MPI_Iallgather,
// MPI_Ibarrier) polled against the deadline. The reference the ring is checked and benchmarked against.
#pragma once

#include <memory>

#include "comm/mpi_base.h"

namespace dgr::comm::detail {

class MpiCommunicator final : public MpiCommunicatorBase {
 public:
  // Collective: every rank constructs it with the same options.
  MpiCommunicator(const Options& options, const World& world);
  // After a failed collective MPI may still write into the fp32 scratch (a late peer): then it is leaked.
  ~MpiCommunicator() override;
  const char* name() const override { return "mpi"; }
  // bf16: widened to fp32, MPI_Iallreduce in fp32, divided (average) and rounded once back to bf16; so on
  // the wire it is fp32, and the result is the correctly rounded sum (the reference for the ring's).
  void allreduce(Buffer buffer, ReduceOp op) override;
  void broadcast(Buffer buffer, int root) override;
  void allgather(Buffer send, Buffer recv) override;

 private:
  std::unique_ptr<float[]> fp32_scratch_;  // [fp32_scratch_count_] the bf16 allreduce in fp32
  size_t fp32_scratch_count_ = 0;
};

}  // namespace dgr::comm::detail
