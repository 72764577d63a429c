// Deadlines, sequence numbers and the timeout report of the MPI-based communicators.
#include "comm/mpi_base.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <thread>

#include <fmt/format.h>

#include "common/error.h"
#include "common/log.h"

namespace dgr::comm::detail {
namespace {

// How long a timed-out rank waits for the other ranks' progress slots before calling them unresponsive.
constexpr std::chrono::milliseconds kProgressQueryWait{1000};
// Without a window (Note [Progress queries] in watchdog.cpp): how long a timed-out rank waits for answers to
// its progress queries before reporting the silent ranks as not arrived, and how often a rank waiting in a
// collective looks for queries (the first look after that long too, so short collectives never look).
constexpr std::chrono::milliseconds kProgressAnswerWait{2000};
constexpr std::chrono::milliseconds kQueryPollInterval{10};
// Deadlines further away than this are clamped (so steady_clock arithmetic cannot overflow).
constexpr int64_t kMaxTimeoutMs = int64_t{1} << 40;
// options.sleep_while_waiting: the first and the longest sleep between polls, and how often to say that a
// rank is still waiting.
constexpr std::chrono::microseconds kFirstSleep{20};
constexpr std::chrono::microseconds kLongestSleep{2000};
constexpr std::chrono::seconds kStillWaitingNote{60};

}  // namespace

MpiCommunicatorBase::MpiCommunicatorBase(const Options& options, const World& world) : options_(options) {
  DGR_CHECK_AS(ConfigError, options.timeout_ms > 0, "comm timeout_ms must be > 0, got {} (use a large value, "
               "e.g. 600000, for no practical limit)", options.timeout_ms);
  DGR_CHECK_AS(ConfigError, options.max_call_bytes >= 1 && options.max_call_bytes <= (size_t{1} << 30),
               "comm max_call_bytes must be in [1, 1 GiB] (MPI counts are int), got {}", options.max_call_bytes);
  duplicate_world();
  DGR_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  DGR_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  DGR_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  DGR_CHECK_AS(CommError, rank_ == world.rank() && size_ == world.size(),
               "MPI_COMM_WORLD says rank {} of {}, the World says rank {} of {}", rank_, size_, world.rank(),
               world.size());
  window_.open(comm_);
  // Every rank gets the same outcome from MPI_Win_allocate, so every rank opens the queries or none does.
  if (size_ > 1 && !window_.is_open()) {
    static std::atomic<bool> told{false};  // once per process, not once per communicator
    if (queries_.open(comm_)) {
      // (name() is not usable here: the derived class does not exist yet.)
      if (!told.exchange(true)) {
        dgr::log::get("comm")->info("MPI_Win_allocate failed (e.g. Open MPI over TCP without UCX): on a timeout "
                                    "the communicator asks the other ranks for their progress with messages "
                                    "instead (Note [Progress queries] in comm/watchdog.cpp)");
      }
    } else {
      dgr::log::get("comm")->warn("MPI_Win_allocate failed: a timeout will not be able to say which ranks did "
                                  "not arrive");
    }
  }
}

void MpiCommunicatorBase::duplicate_world() {
  // Non-blocking, against the deadline: a rank that never comes (stalled or gone before this point) must not
  // hang the others in the set-up, where no progress window exists yet to name it.
  MPI_Request request = MPI_REQUEST_NULL;
  DGR_MPI_CHECK(MPI_Comm_idup(MPI_COMM_WORLD, &comm_, &request));
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::milliseconds(std::min(options_.timeout_ms, kMaxTimeoutMs));
  auto sleep = kFirstSleep;
  while (!test(&request)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      const std::string message = fmt::format(
          "making a {} communicator (MPI_Comm_idup of MPI_COMM_WORLD) timed out after {} ms: not every rank got "
          "there (one stalled or ended before it); look at the logs of the other ranks", options_.backend,
          options_.timeout_ms);
      dgr::log::get("comm")->error("{}", message);
      dgr::log::flush();
      throw CommError(::dgr::detail::where(__FILE__, __LINE__) + message + ::dgr::detail::rank_host_suffix());
    }
    if (options_.sleep_while_waiting) {
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, kLongestSleep);
    }
  }
}

MpiCommunicatorBase::~MpiCommunicatorBase() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  const bool healthy = !broken_ && std::uncaught_exceptions() == 0;
  window_.close(healthy);
  queries_.close(healthy);
  if (healthy && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

MpiCommunicatorBase::Call::~Call() {
  if (ended_) return;
  FlightRecorder::end(*record_, CallState::kFailed);
  owner_->broken_ = true;
  owner_->broken_reason_ = fmt::format("{} #{} failed", op_name(record_->op), record_->seq);
}

void MpiCommunicatorBase::Call::done() {
  FlightRecorder::end(*record_, CallState::kDone);
  ended_ = true;
}

MpiCommunicatorBase::Call MpiCommunicatorBase::begin(OpKind op, DType dtype, size_t num_bytes, const char* detail) {
  DGR_CHECK_AS(CommError, !broken_, "{} communicator cannot run {}: {} earlier and may still have messages in "
               "flight (the job must end; main should catch the first CommError and abort)", name(),
               op_name(op), broken_reason_);
  const uint64_t seq = next_seq_++;
  FlightRecord& record = recorder_.begin(seq, op, dtype, num_bytes, detail);
  window_.enter(seq, op);
  const int64_t timeout_ms = std::min(options_.timeout_ms, kMaxTimeoutMs);
  const auto next_poll = queries_.is_open() ? record.start + kQueryPollInterval
                                            : std::chrono::steady_clock::time_point::max();
  return Call(this, &record, record.start + std::chrono::milliseconds(timeout_ms), next_poll);
}

void MpiCommunicatorBase::answer_queries(Call& call, std::chrono::steady_clock::time_point now) {
  queries_.answer(call.record_->seq, call.record_->op, CallState::kRunning);
  call.next_poll_ = now + kQueryPollInterval;
}

bool MpiCommunicatorBase::test(MPI_Request* request) {
  int flag = 0;
  DGR_MPI_CHECK(MPI_Test(request, &flag, MPI_STATUS_IGNORE));
  return flag != 0;
}

void MpiCommunicatorBase::wait(Call& call, MPI_Request* request) {
  if (options_.sleep_while_waiting) {
    wait_sleeping(call, request);
    return;
  }
  // Spins: yielding the core (sched_yield) to another job while waiting was measured to cost a whole
  // timeslice (ms) per collective on a loaded machine. Open MPI yields by itself when oversubscribed.
  while (!test(request)) check_deadline(call);
}

void MpiCommunicatorBase::wait_sleeping(Call& call, MPI_Request* request) {
  // Control traffic: a rank may wait minutes for another rank's checkpoint write, and must not take a core
  // from it meanwhile.
  auto sleep = kFirstSleep;
  auto next_note = call.record_->start + kStillWaitingNote;
  while (!test(request)) {
    check_deadline(call);
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_note) {
      dgr::log::get("comm")->warn("{} {} #{}: still waiting for the other ranks after {:.0f} s (deadline {:.0f} s): "
                                  "another rank is slow (writing a checkpoint, building an index) or has stopped",
                                  name(), describe(*call.record_), call.record_->seq,
                                  std::chrono::duration<double>(now - call.record_->start).count(),
                                  static_cast<double>(options_.timeout_ms) / 1000);
      next_note += kStillWaitingNote;
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, kLongestSleep);
  }
}

void MpiCommunicatorBase::time_out(Call& call) {
  FlightRecord& record = *call.record_;
  FlightRecorder::end(record, CallState::kTimedOut);
  call.ended_ = true;
  broken_ = true;
  broken_reason_ = fmt::format("{} #{} timed out", op_name(record.op), record.seq);

  const ProgressSource source = queries_.is_open() ? ProgressSource::kQueries : ProgressSource::kWindow;
  const std::vector<RankProgress> progress = source == ProgressSource::kQueries
                                                 ? queries_.ask_all(record.seq, record.op, kProgressAnswerWait)
                                                 : window_.read_all(kProgressQueryWait);
  const TimeoutVerdict verdict = judge_timeout(record.seq, record.op, rank_, progress, source);
  const std::string what = record.op == OpKind::kBarrier
                               ? fmt::format("{} barrier #{}", name(), record.seq)
                               : fmt::format("{} {} #{} ({})", name(), op_name(record.op), record.seq,
                                             describe(record).substr(std::strlen(op_name(record.op)) + 1));
  const std::string message = fmt::format(
      "{} timed out after {} ms: {}. Every rank's progress and this rank's flight recorder are in the "
      "log (logger 'comm'); look at the log of the ranks named here", what, options_.timeout_ms, verdict.summary);

  auto logger = dgr::log::get("comm");
  logger->error("{}", message);
  if (source == ProgressSource::kQueries) {
    logger->error("progress of every rank (the collective each one is waiting in, from their answers to a "
                  "progress query; no answer: not in a collective): {}", format_progress(progress, source));
  } else {
    logger->error("progress of every rank (last collective entered): {}", format_progress(progress));
  }
  const auto now = std::chrono::steady_clock::now();
  const std::vector<FlightRecord> records = recorder_.records();
  logger->error("flight recorder: last {} of {} collectives of this {} communicator, oldest first:", records.size(),
                recorder_.num_recorded(), name());
  for (const FlightRecord& r : records) logger->error("  {}", format_record(r, now));
  dgr::log::flush();
  throw CommError(::dgr::detail::where(__FILE__, __LINE__) + message + ::dgr::detail::rank_host_suffix());
}

void MpiCommunicatorBase::check_allgather_buffers(const Buffer& send, const Buffer& recv) const {
  check_buffer(send, "the allgather send buffer");
  check_buffer(recv, "the allgather receive buffer");
  DGR_CHECK_AS(CommError, send.dtype == recv.dtype, "allgather send is {} but receive is {}", dtype_name(send.dtype),
               dtype_name(recv.dtype));
  DGR_CHECK_AS(CommError, recv.count == send.count * static_cast<size_t>(size_),
               "allgather receive buffer has {} elements, expected {} (world size {} x send count {})", recv.count,
               send.count * static_cast<size_t>(size_), size_, send.count);
}

void MpiCommunicatorBase::check_root(int root, const char* op) const {
  DGR_CHECK_AS(CommError, root >= 0 && root < size_, "{} root {} is not a rank (world size {})", op, root, size_);
}

void MpiCommunicatorBase::check_buffer(const Buffer& buffer, const char* what) const {
  DGR_CHECK_AS(CommError, buffer.device == Device::kCpu,
               "the {} communicator works on host memory but {} is a CUDA buffer (use backend 'nccl')", name(),
               what);
  DGR_CHECK_AS(CommError, buffer.count == 0 || buffer.data != nullptr, "{} has {} elements but no data",
               what, buffer.count);
}

void MpiCommunicatorBase::barrier() {
  Call call = begin(OpKind::kBarrier, DType::kFloat32, 0, "");
  if (size_ > 1) {
    MPI_Request request = MPI_REQUEST_NULL;
    DGR_MPI_CHECK(MPI_Ibarrier(comm_, &request));
    wait(call, &request);
  }
  call.done();
}

std::vector<std::string> MpiCommunicatorBase::gather_bytes(const std::string& mine, int root) {
  check_root(root, "gather_bytes");
  Call call = begin(OpKind::kGatherBytes, DType::kInt64, mine.size(), "");
  call.record_->root = root;
  std::vector<std::string> gathered;  // [rank] on the root
  if (size_ == 1) {
    gathered.push_back(mine);
    call.done();
    return gathered;
  }
  // Every rank learns every size, so that every rank knows how many MPI calls the bytes take.
  std::vector<int64_t> sizes(static_cast<size_t>(size_));  // [rank] bytes
  int64_t my_size = static_cast<int64_t>(mine.size());
  MPI_Request request = MPI_REQUEST_NULL;
  DGR_MPI_CHECK(MPI_Iallgather(&my_size, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, comm_, &request));
  wait(call, &request);
  // Each call moves the next (at most) bytes_per_rank of every rank's string; one call's total fits an int.
  const size_t bytes_per_rank = std::max<size_t>(1, options_.max_call_bytes / static_cast<size_t>(size_));
  const size_t largest = static_cast<size_t>(*std::max_element(sizes.begin(), sizes.end()));
  const bool is_root = rank_ == root;
  if (is_root) {
    gathered.resize(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r) gathered[static_cast<size_t>(r)].resize(static_cast<size_t>(sizes[static_cast<size_t>(r)]));
  }
  std::vector<char> received(is_root ? std::min(largest, bytes_per_rank) * static_cast<size_t>(size_) : 0);
  std::vector<int> counts(static_cast<size_t>(size_)), displacements(static_cast<size_t>(size_));  // [rank] bytes
  for (size_t offset = 0; offset < largest; offset += bytes_per_rank) {
    int total = 0;
    for (size_t r = 0; r < counts.size(); ++r) {
      const size_t left = static_cast<size_t>(sizes[r]) > offset ? static_cast<size_t>(sizes[r]) - offset : 0;
      counts[r] = static_cast<int>(std::min(left, bytes_per_rank));
      displacements[r] = total;
      total += counts[r];
    }
    const int send_count = counts[static_cast<size_t>(rank_)];
    DGR_MPI_CHECK(MPI_Igatherv(send_count > 0 ? mine.data() + offset : mine.data(), send_count, MPI_CHAR,
                               received.data(), counts.data(), displacements.data(), MPI_CHAR, root, comm_, &request));
    wait(call, &request);
    for (size_t r = 0; is_root && r < counts.size(); ++r) {
      if (counts[r] > 0) std::memcpy(gathered[r].data() + offset, received.data() + displacements[r], static_cast<size_t>(counts[r]));
    }
  }
  call.done();
  return gathered;
}

void MpiCommunicatorBase::broadcast_bytes(std::string& message, int root) {
  check_root(root, "broadcast_bytes");
  Call call = begin(OpKind::kBroadcastBytes, DType::kInt64, rank_ == root ? message.size() : 0, "");
  call.record_->root = root;
  if (size_ > 1) {
    int64_t num_bytes = static_cast<int64_t>(message.size());
    MPI_Request request = MPI_REQUEST_NULL;
    DGR_MPI_CHECK(MPI_Ibcast(&num_bytes, 1, MPI_INT64_T, root, comm_, &request));
    wait(call, &request);
    call.record_->num_bytes = static_cast<size_t>(num_bytes);
    if (rank_ != root) message.resize(static_cast<size_t>(num_bytes));
    for (size_t offset = 0; offset < message.size(); offset += options_.max_call_bytes) {
      const size_t count = std::min(options_.max_call_bytes, message.size() - offset);
      DGR_MPI_CHECK(MPI_Ibcast(message.data() + offset, static_cast<int>(count), MPI_CHAR, root, comm_, &request));
      wait(call, &request);
    }
  }
  call.done();
}

}  // namespace dgr::comm::detail
