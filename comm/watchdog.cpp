// Flight recorder, progress window and timeout verdict of the MPI-based communicators.
//
// Note [Progress window]
// Each rank owns one int64 slot in an MPI RMA window (MPI_Win_allocate on the communicator's private
// duplicate of MPI_COMM_WORLD). At the entry of every collective a rank stores seq * 8 + op into its OWN
// slot with a plain store followed by MPI_Win_sync: no message, no lock request, nothing another rank has
// to answer, so the healthy path cannot block on the window. The passive-target epoch (MPI_Win_lock_all
// with MPI_MODE_NOCHECK: no lock traffic, and nobody ever takes an exclusive lock) is opened once at
// construction and closed once in the destructor, where no RMA operation is outstanding.
// Only after a deadline has passed does a rank read the others' slots, with MPI_Rget, polled with
// MPI_Test against a short second deadline: a slot that cannot be read in time (an RMA implementation
// that needs the target's progress, and a target that is stuck) marks that rank "unresponsive" instead of
// hanging the report. The reads are never waited for beyond that deadline, and the window of a
// communicator that failed is never freed (MPI_Win_free is collective), so the report cannot deadlock
// either; the job is about to be aborted anyway.
#include "comm/watchdog.h"

#include <algorithm>
#include <ctime>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"

namespace dgr::comm::detail {
namespace {

constexpr int64_t kOpBits = 8;  // slot = seq * kOpBits + op

std::string format_clock(std::chrono::system_clock::time_point time) {
  auto since_epoch = time.time_since_epoch();
  auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count();
  std::time_t as_time_t = static_cast<std::time_t>(seconds.count());
  std::tm local{};
  localtime_r(&as_time_t, &local);
  return fmt::format("{:02d}:{:02d}:{:02d}.{:03d}", local.tm_hour, local.tm_min, local.tm_sec, millis);
}

std::string join_ranks(const std::vector<int>& ranks) {
  return fmt::format("{}", fmt::join(ranks, ","));
}

}  // namespace

const char* op_name(OpKind op) {
  switch (op) {
    case OpKind::kNone: return "none";
    case OpKind::kAllreduce: return "allreduce";
    case OpKind::kBroadcast: return "broadcast";
    case OpKind::kAllgather: return "allgather";
    case OpKind::kBarrier: return "barrier";
  }
  return "?";
}

const char* state_name(CallState state) {
  switch (state) {
    case CallState::kRunning: return "running";
    case CallState::kDone: return "done";
    case CallState::kTimedOut: return "TIMED OUT";
    case CallState::kFailed: return "failed";
  }
  return "?";
}

std::string format_bytes(size_t num_bytes) {
  if (num_bytes < 1024) return fmt::format("{} B", num_bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(num_bytes) / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, units[unit]);
}

std::string format_record(const FlightRecord& record, std::chrono::steady_clock::time_point now) {
  std::string what = record.op == OpKind::kBarrier
                         ? std::string("barrier")
                         : fmt::format("{} {} {}{}{}", op_name(record.op), format_bytes(record.num_bytes),
                                       dtype_name(record.dtype), *record.detail ? " " : "", record.detail);
  double duration_ms = record.state == CallState::kRunning
                           ? std::chrono::duration<double, std::milli>(now - record.start).count()
                           : record.duration_ms;
  return fmt::format("#{} {} started {} {} {:.3f} ms {}", record.seq, what, format_clock(record.start_wall),
                     record.state == CallState::kRunning ? "running for" : "took", duration_ms,
                     state_name(record.state));
}

FlightRecord& FlightRecorder::begin(uint64_t seq, OpKind op, DType dtype, size_t num_bytes, const char* detail) {
  FlightRecord& record = records_[seq % kCapacity];
  record.seq = seq;
  record.op = op;
  record.dtype = dtype;
  record.detail = detail;
  record.num_bytes = num_bytes;
  record.start = std::chrono::steady_clock::now();
  record.start_wall = std::chrono::system_clock::now();
  record.duration_ms = 0;
  record.state = CallState::kRunning;
  ++num_recorded_;
  return record;
}

void FlightRecorder::end(FlightRecord& record, CallState state) {
  record.duration_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - record.start).count();
  record.state = state;
}

std::vector<FlightRecord> FlightRecorder::records() const {
  std::vector<FlightRecord> result;
  for (const FlightRecord& record : records_) {
    if (record.seq != 0) result.push_back(record);
  }
  std::sort(result.begin(), result.end(), [](const FlightRecord& a, const FlightRecord& b) { return a.seq < b.seq; });
  return result;
}

void ProgressWindow::open(MPI_Comm comm) {
  DGR_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  DGR_MPI_CHECK(MPI_Comm_size(comm, &size_));
  if (size_ <= 1) return;  // nobody to wait for
  int64_t* base = nullptr;
  MPI_Win win = MPI_WIN_NULL;
  int rc = MPI_Win_allocate(sizeof(int64_t), sizeof(int64_t), MPI_INFO_NULL, comm, &base, &win);
  // Every rank gets the same outcome from this collective call; without a window, timeouts still work
  // but cannot say who is missing.
  if (rc != MPI_SUCCESS) return;
  MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN);
  *base = 0;
  if (MPI_Win_lock_all(MPI_MODE_NOCHECK, win) != MPI_SUCCESS) {
    MPI_Win_free(&win);
    return;
  }
  MPI_Win_sync(win);
  win_ = win;
  slot_ = base;
}

void ProgressWindow::enter(uint64_t seq, OpKind op) {
  if (win_ == MPI_WIN_NULL) return;
  __atomic_store_n(slot_, static_cast<int64_t>(seq) * kOpBits + static_cast<int64_t>(op), __ATOMIC_RELEASE);
  MPI_Win_sync(win_);
}

std::vector<RankProgress> ProgressWindow::read_all(std::chrono::milliseconds wait) {
  std::vector<RankProgress> progress(static_cast<size_t>(size_));
  if (win_ == MPI_WIN_NULL) return progress;  // unknown: every rank reads as unresponsive
  std::vector<int64_t> values(static_cast<size_t>(size_), -1);  // [rank]
  std::vector<MPI_Request> requests(static_cast<size_t>(size_), MPI_REQUEST_NULL);  // [rank]
  std::vector<char> done(static_cast<size_t>(size_), 0);  // [rank]
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) {
      values[peer] = __atomic_load_n(slot_, __ATOMIC_ACQUIRE);
      done[peer] = 1;
    } else if (MPI_Rget(&values[peer], 1, MPI_INT64_T, peer, 0, 1, MPI_INT64_T, win_, &requests[peer]) != MPI_SUCCESS) {
      done[peer] = -1;  // cannot even ask
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    bool all_done = true;
    for (int peer = 0; peer < size_; ++peer) {
      if (done[peer] != 0) continue;
      int flag = 0;
      if (MPI_Test(&requests[peer], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        done[peer] = -1;
      } else if (flag) {
        done[peer] = 1;
      } else {
        all_done = false;
      }
    }
    if (all_done || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::yield();
  }
  for (int peer = 0; peer < size_; ++peer) {
    if (done[peer] != 1 || values[peer] < 0) continue;
    progress[peer].readable = true;
    progress[peer].seq = static_cast<uint64_t>(values[peer] / kOpBits);
    progress[peer].op = static_cast<OpKind>(values[peer] % kOpBits);
  }
  return progress;
}

void ProgressWindow::close(bool healthy) {
  if (win_ == MPI_WIN_NULL) return;
  if (healthy) {
    MPI_Win_unlock_all(win_);
    MPI_Win_free(&win_);
  }
  win_ = MPI_WIN_NULL;
  slot_ = nullptr;
}

TimeoutVerdict judge_timeout(uint64_t seq, OpKind op, int rank, const std::vector<RankProgress>& progress) {
  TimeoutVerdict verdict;
  std::vector<std::string> missing_details;
  for (int peer = 0; peer < static_cast<int>(progress.size()); ++peer) {
    if (peer == rank) continue;
    const RankProgress& p = progress[peer];
    if (!p.readable) {
      verdict.unresponsive.push_back(peer);
    } else if (p.seq < seq) {
      verdict.missing.push_back(peer);
      missing_details.push_back(p.seq == 0 ? fmt::format("rank {} entered none yet", peer)
                                           : fmt::format("rank {} last entered #{} {}", peer, p.seq, op_name(p.op)));
    } else if (p.seq > seq) {
      verdict.ahead.push_back(peer);
    } else if (p.op != op) {
      verdict.diverged.push_back(peer);
    }
  }
  std::vector<std::string> parts;
  if (!verdict.missing.empty()) {
    parts.push_back(fmt::format("ranks {} did not arrive ({})", join_ranks(verdict.missing),
                                fmt::join(missing_details, "; ")));
  }
  if (!verdict.unresponsive.empty()) {
    parts.push_back(fmt::format("ranks {} did not answer the progress query (stuck or dead?)",
                                join_ranks(verdict.unresponsive)));
  }
  if (!verdict.diverged.empty()) {
    parts.push_back(fmt::format("ranks {} entered #{} as a different collective (the ranks' sequences of "
                                "collectives diverged)", join_ranks(verdict.diverged), seq));
  }
  if (!verdict.ahead.empty()) {
    parts.push_back(fmt::format("ranks {} are already past it", join_ranks(verdict.ahead)));
  }
  if (parts.empty()) {
    parts.push_back(fmt::format("every rank entered #{} but it did not complete (a rank stuck inside it, or "
                                "ranks that passed different counts or dtypes?)", seq));
  }
  verdict.summary = fmt::format("{}", fmt::join(parts, "; "));
  return verdict;
}

std::string format_progress(const std::vector<RankProgress>& progress) {
  std::vector<std::string> parts;
  for (size_t peer = 0; peer < progress.size(); ++peer) {
    const RankProgress& p = progress[peer];
    parts.push_back(p.readable ? fmt::format("r{}=#{} {}", peer, p.seq, op_name(p.op)) : fmt::format("r{}=?", peer));
  }
  return fmt::format("{}", fmt::join(parts, " "));
}

}  // namespace dgr::comm::detail
