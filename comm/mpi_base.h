// The plumbing shared by the MPI-based communicators ("ring", "mpi"): a private duplicate of
// MPI_COMM_WORLD, a sequence number and a deadline for every call (non-blocking MPI polled with MPI_Test),
// the flight recorder, the progress window (or, where it cannot be made, progress queries), and the timeout
// report naming the ranks that did not arrive.
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "comm/communicator.h"
#include "comm/watchdog.h"

namespace dgr::comm::detail {

// Not thread-safe: one collective at a time per communicator (like every MPI-based backend here).
class MpiCommunicatorBase : public Communicator {
 public:
  MpiCommunicatorBase(const MpiCommunicatorBase&) = delete;
  MpiCommunicatorBase& operator=(const MpiCommunicatorBase&) = delete;
  // Frees the MPI duplicate and the window (collective) unless a collective failed or an exception is
  // unwinding: then both are leaked, since freeing them could wait forever for a rank that is gone.
  ~MpiCommunicatorBase() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  uint64_t num_collectives() const override { return next_seq_ - 1; }
  // MPI_Ibarrier polled against the deadline (both backends).
  void barrier() override;
  // Both backends: the sizes by MPI_Iallgather, then MPI_Igatherv in calls of at most
  // options.max_call_bytes, every call polled against the one deadline.
  std::vector<std::string> gather_bytes(const std::string& mine, int root) override;
  // Both backends: the size, then the bytes by MPI_Ibcast in calls of at most options.max_call_bytes.
  void broadcast_bytes(std::string& message, int root) override;

  const FlightRecorder& flight_recorder() const { return recorder_; }
  // True after a collective timed out or failed: every later call throws CommError.
  bool is_broken() const { return broken_; }

 protected:
  // Collective: every rank constructs it with the same options.
  MpiCommunicatorBase(const Options& options, const World& world);

  // One collective in flight, made by begin(). done() records its success. Destroyed without done() (an
  // exception went through it) it is recorded as failed and the communicator becomes unusable: some of
  // its messages may still be in flight.
  class Call {
   public:
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    ~Call();
    void done();
    bool expired() const { return std::chrono::steady_clock::now() >= deadline_; }

   private:
    friend class MpiCommunicatorBase;
    Call(MpiCommunicatorBase* owner, FlightRecord* record, std::chrono::steady_clock::time_point deadline,
         std::chrono::steady_clock::time_point next_poll)
        : owner_(owner), record_(record), deadline_(deadline), next_poll_(next_poll) {}
    MpiCommunicatorBase* owner_;
    FlightRecord* record_;
    std::chrono::steady_clock::time_point deadline_;
    // When to look next for progress queries to answer (never when the progress window works).
    std::chrono::steady_clock::time_point next_poll_;
    bool ended_ = false;
  };

  // Starts collective number num_collectives() + 1: checks the communicator is usable, records it, and
  // marks this rank's progress slot (see Note [Progress window] in watchdog.cpp).
  Call begin(OpKind op, DType dtype, size_t num_bytes, const char* detail);

  // True when `request` has completed (MPI_Test; drives MPI's progress).
  bool test(MPI_Request* request);
  // Polls `request` until it completes, or throws at the call's deadline (see time_out). Spins, or with
  // options.sleep_while_waiting sleeps in short steps and warns once a minute.
  void wait(Call& call, MPI_Request* request);
  // Throws at the call's deadline (see time_out). Cheap: one clock read. Without a progress window it also
  // answers progress queries, every few milliseconds (Note [Progress queries] in watchdog.cpp).
  void check_deadline(Call& call) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= call.deadline_) time_out(call);
    if (now >= call.next_poll_) answer_queries(call, now);
  }
  // Logs (error level, logger "comm") the collective that timed out, the progress of every rank (from the
  // window, or from the answers to progress queries) and the flight recorder, then throws CommError naming
  // the ranks that did not arrive.
  [[noreturn]] void time_out(Call& call);

  // Local checks of a buffer argument (host memory, data for a non-empty buffer).
  void check_buffer(const Buffer& buffer, const char* what) const;
  // Both buffers valid, same dtype, recv.count == size() * send.count.
  void check_allgather_buffers(const Buffer& send, const Buffer& recv) const;
  // Throws CommError when `root` is not a rank.
  void check_root(int root, const char* op) const;

  const Options options_;
  MPI_Comm comm_ = MPI_COMM_NULL;  // private duplicate of MPI_COMM_WORLD
  int rank_ = 0;
  int size_ = 1;

 private:
  // comm_ = MPI_Comm_idup(MPI_COMM_WORLD), polled against the deadline (CommError when it passes).
  void duplicate_world();
  // wait() with options.sleep_while_waiting.
  void wait_sleeping(Call& call, MPI_Request* request);
  // Answers the progress queries that have arrived, as waiting in `call`; schedules the next look.
  void answer_queries(Call& call, std::chrono::steady_clock::time_point now);

  FlightRecorder recorder_;
  ProgressWindow window_;
  ProgressQueries queries_;  // open only when window_ is not
  uint64_t next_seq_ = 1;
  bool broken_ = false;
  std::string broken_reason_;
};

}  // namespace dgr::comm::detail
