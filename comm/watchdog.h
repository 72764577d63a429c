// The watchdog of the MPI-based backends: a flight recorder of the last collectives, a progress window
// (one int64 per rank in an MPI RMA window: the last collective each rank entered) and the timeout report
// that names the ranks that did not arrive. See Note [Progress window] in watchdog.cpp. Where the MPI library
// cannot make the window, progress queries (point-to-point messages, only after a deadline) take its
// place: Note [Progress queries].
#pragma once

#include <mpi.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace dgr::comm::detail {

// At most 7 (the progress window packs seq * 8 + op).
enum class OpKind : uint8_t {
  kNone = 0, kAllreduce = 1, kBroadcast = 2, kAllgather = 3, kBarrier = 4, kGatherBytes = 5, kBroadcastBytes = 6
};
const char* op_name(OpKind op);

enum class CallState : uint8_t { kRunning, kDone, kTimedOut, kFailed };
const char* state_name(CallState state);

// "4.0 MiB", "512 B".
std::string format_bytes(size_t num_bytes);

struct FlightRecord {
  uint64_t seq = 0;  // 1-based sequence number of the collective on its communicator
  OpKind op = OpKind::kNone;
  DType dtype = DType::kFloat32;
  const char* detail = "";  // "sum", "average", "", ...: a string literal
  int root = -1;            // gather_bytes, broadcast_bytes: the root; -1 otherwise
  size_t num_bytes = 0;     // this rank's buffer (allgather, gather_bytes: what this rank sends)
  std::chrono::system_clock::time_point start_wall;
  std::chrono::steady_clock::time_point start;
  double duration_ms = 0;  // set when the call ends (done, failed or timed out)
  CallState state = CallState::kRunning;
};

// The collective without its timing: "allreduce 4.0 MiB fp32 sum", "barrier", "gather_bytes 12 B root 0".
std::string describe(const FlightRecord& record);
// One line: "#42 allreduce 4.0 MiB fp32 sum started 12:00:01.234 took 3.1 ms done".
std::string format_record(const FlightRecord& record, std::chrono::steady_clock::time_point now);

// The last kCapacity collectives of one communicator. Not thread-safe (one collective at a time).
class FlightRecorder {
 public:
  static constexpr size_t kCapacity = 16;
  // Starts the record of collective `seq` (overwriting the oldest); valid until kCapacity more begin.
  FlightRecord& begin(uint64_t seq, OpKind op, DType dtype, size_t num_bytes, const char* detail);
  static void end(FlightRecord& record, CallState state);
  std::vector<FlightRecord> records() const;  // oldest first, at most kCapacity
  uint64_t num_recorded() const { return num_recorded_; }

 private:
  std::array<FlightRecord, kCapacity> records_;  // [seq % kCapacity]
  uint64_t num_recorded_ = 0;
};

// What the progress window (or a progress query) says about one rank.
struct RankProgress {
  bool readable = false;  // false: the read did not complete (the query was not answered) before its deadline
  uint64_t seq = 0;       // last collective the rank entered (0: none yet); queries: the one it is waiting in
  OpKind op = OpKind::kNone;
  CallState state = CallState::kRunning;  // queries only: that collective's state when the rank answered
};

// Where the progress of the other ranks came from.
enum class ProgressSource : uint8_t {
  kWindow,   // their slots in the progress window: the last collective each rank entered
  kQueries,  // their answers to a progress query: only ranks waiting inside a collective answer
};

class ProgressWindow {
 public:
  ProgressWindow() = default;
  // Collective over `comm` (every rank, same order). When the MPI library cannot make the window the
  // communicator still works; a timeout report then says progress is unknown.
  void open(MPI_Comm comm);
  // This rank entered collective `seq`: a store into its own slot, no communication.
  void enter(uint64_t seq, OpKind op);
  // Reads every rank's slot (MPI_Rget under the lock_all epoch opened at construction), polling until
  // `wait` has passed. Only called after a timeout. [rank]
  std::vector<RankProgress> read_all(std::chrono::milliseconds wait);
  // Frees the window (collective) when `healthy`; after a failure it is left alone, since a rank that
  // will never come back would make MPI_Win_free wait forever.
  void close(bool healthy);
  bool is_open() const { return win_ != MPI_WIN_NULL; }

 private:
  MPI_Win win_ = MPI_WIN_NULL;
  int64_t* slot_ = nullptr;  // this rank's slot (seq * 8 + op)
  int rank_ = 0;
  int size_ = 1;
};

// The fallback of the progress window (Note [Progress queries] in watchdog.cpp): a private duplicate of the
// communicator on which a rank whose deadline passed asks every other rank "which collective are you
// waiting in?", and on which ranks waiting inside a collective answer. Used only when the window could not
// be made. Not thread-safe: called by the thread running the communicator's collective.
class ProgressQueries {
 public:
  ProgressQueries() = default;
  ProgressQueries(const ProgressQueries&) = delete;
  ProgressQueries& operator=(const ProgressQueries&) = delete;
  // Collective over `comm` (every rank, same order): duplicates it and posts the receive for queries.
  // Returns false (and stays closed) when MPI cannot.
  bool open(MPI_Comm comm);
  bool is_open() const { return comm_ != MPI_COMM_NULL; }
  // Answers every query that has arrived: this rank is waiting in collective `seq` `op`, in `state`. Local:
  // tests the posted receive and sends the answers without waiting for them.
  void answer(uint64_t seq, OpKind op, CallState state);
  // Sends a query to every other rank and polls for their answers until every rank has answered or `wait`
  // has passed, answering the other ranks' queries meanwhile (as `seq` `op` timed out). Only called after a
  // timeout. [rank]
  std::vector<RankProgress> ask_all(uint64_t seq, OpKind op, std::chrono::milliseconds wait);
  // Cancels the posted receive and frees the duplicate when `healthy`; after a failure everything MPI may
  // still write into is left alone (leaked), as with the window.
  void close(bool healthy);

 private:
  struct State;  // message buffers and requests; on the heap so that a failure can leak them whole
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  uint64_t next_query_id_ = 1;
  State* state_ = nullptr;
};

// The verdict of a timeout from the progress of every rank.
struct TimeoutVerdict {
  std::vector<int> missing;       // entered an earlier collective than this rank's
  std::vector<int> unresponsive;  // their slot could not be read in time
  std::vector<int> ahead;         // already entered a later collective
  std::vector<int> diverged;      // entered the same sequence number with a different operation
  std::string summary;            // one line for the error message: "ranks 2 did not arrive (...)"
};
// With ProgressSource::kQueries a rank that did not answer is counted as missing (only ranks waiting inside
// a collective answer), and the summary says so.
TimeoutVerdict judge_timeout(uint64_t seq, OpKind op, int rank, const std::vector<RankProgress>& progress,
                             ProgressSource source = ProgressSource::kWindow);

// "r0=#42 allreduce r1=#42 allreduce r2=#41 allreduce r3=?" for the log; with kQueries
// "r0=#42 allreduce (TIMED OUT) r1=#42 allreduce (running) r2=no answer".
std::string format_progress(const std::vector<RankProgress>& progress,
                            ProgressSource source = ProgressSource::kWindow);

}  // namespace dgr::comm::detail
