// Deadlines, sequence numbers and the timeout report of the MPI-based communicators.
#include "comm/mpi_base.h"

#include <algorithm>
#include <atomic>
#include <exception>

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

}  // namespace

MpiCommunicatorBase::MpiCommunicatorBase(const Options& options, const World& world) : options_(options) {
  DGR_CHECK_AS(ConfigError, options.timeout_ms > 0, "comm timeout_ms must be > 0, got {} (use a large value, "
               "e.g. 600000, for no practical limit)", options.timeout_ms);
  DGR_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
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
  // Spins: yielding the core (sched_yield) to another job while waiting was measured to cost a whole
  // timeslice (ms) per collective on a loaded machine. Open MPI yields by itself when oversubscribed.
  while (!test(request)) check_deadline(call);
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
                               : fmt::format("{} {} #{} ({} {}{}{})", name(), op_name(record.op), record.seq,
                                             format_bytes(record.num_bytes), dtype_name(record.dtype),
                                             *record.detail ? " " : "", record.detail);
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

}  // namespace dgr::comm::detail
