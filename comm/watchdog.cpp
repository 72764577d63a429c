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
//
// Note [Progress queries]
// Some MPI libraries cannot make the window: Open MPI 4.1 over plain TCP between nodes (no UCX) fails
// MPI_Win_allocate (osc rdma needs an RDMA-capable BTL). Every rank then gets the same failure, and the
// communicator falls back on messages, still at no cost to a healthy collective: nothing is sent unless a
// deadline has passed. At construction each rank duplicates the communicator once more (the query
// communicator: nothing else travels on it) and posts one receive for a query from any rank.
// - Asking: a rank whose deadline passed sends a tiny query (an id) to every other rank and polls for the
//   answers {id, seq * 8 + op, state} with MPI_Test against a short second deadline, never a blocking wait.
// - Answering: a rank waiting inside a collective of this communicator tests its posted receive from that
//   collective's deadline poll loop, every 10 ms from 10 ms in (a collective that completes sooner never
//   looks), and answers with its current collective, "running". A rank that has timed out answers, with
//   "TIMED OUT", while it waits for its own answers, so ranks whose deadlines pass together hear from each
//   other; once it has logged its report it answers no more (it is ending the job anyway).
// - A rank that does not answer is in no collective of this communicator: dead, stuck outside a collective
//   (or in another communicator's), or not yet arrived. The report names it among the ranks that did not
//   arrive; ranks that answered are "waiting in #N".
// A query that reaches a rank between collectives is answered, late and harmlessly, in its next long
// collective; every answer echoes its query's id, so an answer to an earlier query is recognised and
// dropped. Everything is polled by the thread that runs the collective, which already makes every MPI call
// of this communicator: no added concurrency, under MPI_THREAD_SERIALIZED as under MPI_THREAD_MULTIPLE.
// Messages left unmatched when the job ends (a query to a dead rank, a late answer) are fine: the job is
// being aborted; their buffers live on the heap and, as with the window, are leaked rather than freed
// under MPI when the communicator failed. When the window works none of this exists: no duplicate, no
// posted receive, no polling.
#include "comm/watchdog.h"

#include <algorithm>
#include <array>
#include <ctime>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"

namespace dgr::comm::detail {
namespace {

constexpr int64_t kOpBits = 8;  // slot = seq * kOpBits + op

// Progress queries (Note [Progress queries]): a query is {id}, an answer {id, seq * kOpBits + op, state}.
constexpr int kTagQuery = 1;
constexpr int kTagAnswer = 2;
constexpr int kAnswerWords = 3;
using AnswerMessage = std::array<int64_t, kAnswerWords>;

// Completes a request that may never complete (a peer that is gone): one MPI_Test. True when it is done
// (and now MPI_REQUEST_NULL); an error also counts as done, since MPI gives the request up.
bool test_once(MPI_Request* request, MPI_Status* status = MPI_STATUS_IGNORE) {
  if (*request == MPI_REQUEST_NULL) return true;
  int flag = 0;
  if (MPI_Test(request, &flag, status) != MPI_SUCCESS) {
    *request = MPI_REQUEST_NULL;
    return true;
  }
  return flag != 0;
}

// Cancels a receive that has not completed: true when it is finished (cancelled or completed meanwhile).
bool cancel_receive(MPI_Request* request) {
  if (*request == MPI_REQUEST_NULL) return true;
  MPI_Cancel(request);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    if (test_once(request)) return true;
  }
  return false;
}

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
    case OpKind::kGatherBytes: return "gather_bytes";
    case OpKind::kBroadcastBytes: return "broadcast_bytes";
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

std::string describe(const FlightRecord& record) {
  switch (record.op) {
    case OpKind::kBarrier: return "barrier";
    case OpKind::kGatherBytes:
    case OpKind::kBroadcastBytes:
      return fmt::format("{} {} root {}", op_name(record.op), format_bytes(record.num_bytes), record.root);
    default:
      return fmt::format("{} {} {}{}{}", op_name(record.op), format_bytes(record.num_bytes), dtype_name(record.dtype),
                         *record.detail ? " " : "", record.detail);
  }
}

std::string format_record(const FlightRecord& record, std::chrono::steady_clock::time_point now) {
  const std::string what = describe(record);
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
  record.root = -1;
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

struct ProgressQueries::State {
  // Answering: the posted receive of a query from any rank, and the last answer sent to each rank.
  int64_t query_in = 0;
  MPI_Request query_in_request = MPI_REQUEST_NULL;
  std::vector<AnswerMessage> answers_out;        // [peer]
  std::vector<MPI_Request> answer_out_requests;  // [peer]
  // Asking: the query sent to each rank and the receive of its answer.
  std::vector<int64_t> queries_out;             // [peer]
  std::vector<MPI_Request> query_out_requests;  // [peer]
  std::vector<AnswerMessage> answers_in;        // [peer]
  std::vector<MPI_Request> answer_in_requests;  // [peer]
};

bool ProgressQueries::open(MPI_Comm comm) {
  DGR_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  DGR_MPI_CHECK(MPI_Comm_size(comm, &size_));
  if (size_ <= 1) return false;  // nobody to ask
  MPI_Comm dup = MPI_COMM_NULL;
  if (MPI_Comm_dup(comm, &dup) != MPI_SUCCESS) return false;
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  auto state = std::make_unique<State>();
  const size_t n = static_cast<size_t>(size_);
  state->answers_out.assign(n, AnswerMessage{});
  state->answer_out_requests.assign(n, MPI_REQUEST_NULL);
  state->queries_out.assign(n, 0);
  state->query_out_requests.assign(n, MPI_REQUEST_NULL);
  state->answers_in.assign(n, AnswerMessage{});
  state->answer_in_requests.assign(n, MPI_REQUEST_NULL);
  if (MPI_Irecv(&state->query_in, 1, MPI_INT64_T, MPI_ANY_SOURCE, kTagQuery, dup, &state->query_in_request) !=
      MPI_SUCCESS) {
    MPI_Comm_free(&dup);
    return false;
  }
  comm_ = dup;
  state_ = state.release();
  return true;
}

void ProgressQueries::answer(uint64_t seq, OpKind op, CallState state) {
  if (state_ == nullptr) return;
  State& s = *state_;
  const int64_t slot = static_cast<int64_t>(seq) * kOpBits + static_cast<int64_t>(op);
  for (int received = 0; received < size_; ++received) {  // at most one query per rank per call
    if (s.query_in_request == MPI_REQUEST_NULL) return;  // a failed re-post: no more answers
    MPI_Status status;
    int flag = 0;
    if (MPI_Test(&s.query_in_request, &flag, &status) != MPI_SUCCESS) {
      s.query_in_request = MPI_REQUEST_NULL;
      return;
    }
    if (!flag) return;
    const int peer = status.MPI_SOURCE;
    const int64_t query_id = s.query_in;
    if (MPI_Irecv(&s.query_in, 1, MPI_INT64_T, MPI_ANY_SOURCE, kTagQuery, comm_, &s.query_in_request) != MPI_SUCCESS) {
      s.query_in_request = MPI_REQUEST_NULL;
    }
    if (peer < 0 || peer >= size_ || peer == rank_) continue;
    // The answer to this rank's previous query still on its way (it is not polling): skip this one.
    if (!test_once(&s.answer_out_requests[peer])) continue;
    s.answers_out[peer] = {query_id, slot, static_cast<int64_t>(state)};
    if (MPI_Isend(s.answers_out[peer].data(), kAnswerWords, MPI_INT64_T, peer, kTagAnswer, comm_,
                  &s.answer_out_requests[peer]) != MPI_SUCCESS) {
      s.answer_out_requests[peer] = MPI_REQUEST_NULL;
    }
  }
}

std::vector<RankProgress> ProgressQueries::ask_all(uint64_t seq, OpKind op, std::chrono::milliseconds wait) {
  std::vector<RankProgress> progress(static_cast<size_t>(size_));
  if (rank_ >= 0 && rank_ < size_) progress[rank_] = {true, seq, op, CallState::kTimedOut};
  if (state_ == nullptr) return progress;  // unknown: every other rank reads as unanswered
  State& s = *state_;
  const int64_t query_id = static_cast<int64_t>(next_query_id_++);
  std::vector<int> answered(static_cast<size_t>(size_), 0);  // [rank] 1: answered, -1: cannot be asked
  answered[rank_] = 1;
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    // A receive left from an earlier query stays posted: what it gets is checked against the id below.
    if (s.answer_in_requests[peer] == MPI_REQUEST_NULL &&
        MPI_Irecv(s.answers_in[peer].data(), kAnswerWords, MPI_INT64_T, peer, kTagAnswer, comm_,
                  &s.answer_in_requests[peer]) != MPI_SUCCESS) {
      s.answer_in_requests[peer] = MPI_REQUEST_NULL;
      answered[peer] = -1;
      continue;
    }
    if (!test_once(&s.query_out_requests[peer])) continue;  // an earlier query is still on its way there
    s.queries_out[peer] = query_id;
    if (MPI_Isend(&s.queries_out[peer], 1, MPI_INT64_T, peer, kTagQuery, comm_, &s.query_out_requests[peer]) !=
        MPI_SUCCESS) {
      s.query_out_requests[peer] = MPI_REQUEST_NULL;
      answered[peer] = -1;
    }
  }
  // Takes the answer that has arrived from `peer`, or re-posts the receive after an answer to an earlier
  // query. True when `peer` has answered this query.
  auto take_answer = [&](int peer) {
    const AnswerMessage& message = s.answers_in[peer];
    if (message[0] != query_id) {
      if (MPI_Irecv(s.answers_in[peer].data(), kAnswerWords, MPI_INT64_T, peer, kTagAnswer, comm_,
                    &s.answer_in_requests[peer]) != MPI_SUCCESS) {
        s.answer_in_requests[peer] = MPI_REQUEST_NULL;
        answered[peer] = -1;
      }
      return false;
    }
    RankProgress& p = progress[peer];
    p.readable = message[1] >= 0;
    p.seq = static_cast<uint64_t>(message[1] / kOpBits);
    p.op = static_cast<OpKind>(message[1] % kOpBits);
    p.state = static_cast<CallState>(message[2]);
    answered[peer] = 1;
    return true;
  };
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    bool all_answered = true;
    for (int peer = 0; peer < size_; ++peer) {
      if (answered[peer] != 0) continue;
      if (test_once(&s.answer_in_requests[peer])) take_answer(peer);
      if (answered[peer] == 0) all_answered = false;
    }
    answer(seq, op, CallState::kTimedOut);  // ranks whose deadlines passed together ask each other
    if (all_answered || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::yield();
  }
  for (int peer = 0; peer < size_; ++peer) {
    if (answered[peer] != 0 || s.answer_in_requests[peer] == MPI_REQUEST_NULL) continue;
    // Cancelled, or completed after all (then it may be this query's answer, just in).
    MPI_Status status;
    MPI_Cancel(&s.answer_in_requests[peer]);
    int flag = 0;
    if (MPI_Test(&s.answer_in_requests[peer], &flag, &status) != MPI_SUCCESS) {
      s.answer_in_requests[peer] = MPI_REQUEST_NULL;
      continue;
    }
    int cancelled = 0;
    if (flag && MPI_Test_cancelled(&status, &cancelled) == MPI_SUCCESS && !cancelled &&
        s.answers_in[peer][0] == query_id) {
      take_answer(peer);
    }
  }
  return progress;
}

void ProgressQueries::close(bool healthy) {
  if (comm_ == MPI_COMM_NULL) return;
  if (healthy) {
    State& s = *state_;
    bool finished = cancel_receive(&s.query_in_request);
    for (MPI_Request& request : s.answer_in_requests) finished = cancel_receive(&request) && finished;
    for (MPI_Request& request : s.answer_out_requests) finished = test_once(&request) && finished;
    for (MPI_Request& request : s.query_out_requests) finished = test_once(&request) && finished;
    if (finished) delete state_;  // else MPI may still use the buffers: leaked
    MPI_Comm_free(&comm_);
  }
  comm_ = MPI_COMM_NULL;
  state_ = nullptr;
}

TimeoutVerdict judge_timeout(uint64_t seq, OpKind op, int rank, const std::vector<RankProgress>& progress,
                             ProgressSource source) {
  TimeoutVerdict verdict;
  std::vector<std::string> missing_details;
  std::vector<int> silent;  // kQueries: did not answer
  for (int peer = 0; peer < static_cast<int>(progress.size()); ++peer) {
    if (peer == rank) continue;
    const RankProgress& p = progress[peer];
    if (!p.readable && source == ProgressSource::kQueries) {
      verdict.missing.push_back(peer);
      silent.push_back(peer);
    } else if (!p.readable) {
      verdict.unresponsive.push_back(peer);
    } else if (p.seq < seq && source == ProgressSource::kQueries) {
      verdict.missing.push_back(peer);
      missing_details.push_back(fmt::format("rank {} is waiting in #{} {}", peer, p.seq, op_name(p.op)));
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
  if (!silent.empty()) {
    missing_details.push_back(fmt::format("{} {} did not answer the progress query: dead, stuck outside a "
                                          "collective, or not yet arrived", silent.size() == 1 ? "rank" : "ranks",
                                          join_ranks(silent)));
  }
  std::sort(verdict.missing.begin(), verdict.missing.end());
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

std::string format_progress(const std::vector<RankProgress>& progress, ProgressSource source) {
  std::vector<std::string> parts;
  for (size_t peer = 0; peer < progress.size(); ++peer) {
    const RankProgress& p = progress[peer];
    if (source == ProgressSource::kQueries) {
      parts.push_back(p.readable ? fmt::format("r{}=#{} {} ({})", peer, p.seq, op_name(p.op), state_name(p.state))
                                 : fmt::format("r{}=no answer", peer));
    } else {
      parts.push_back(p.readable ? fmt::format("r{}=#{} {}", peer, p.seq, op_name(p.op)) : fmt::format("r{}=?", peer));
    }
  }
  return fmt::format("{}", fmt::join(parts, " "));
}

}  // namespace dgr::comm::detail
