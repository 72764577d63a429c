// The "nccl" backend: a non-blocking NCCL communicator on one GPU per rank. Every collective is enqueued
// on the communicator's own stream and then polled (cudaStreamQuery + ncclCommGetAsyncError) until it is
// done or options.timeout_ms passes; on a timeout or an asynchronous error the last collectives are
// logged, the communicator is aborted and CommError is thrown, so a dead peer never hangs a rank forever.
#include "comm/nccl_communicator.h"

#ifdef DGR_HAVE_NCCL

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "comm/cuda_check.h"
#ifdef DGR_NCCL_RING_KERNELS  // defined by comm/nccl.cmake, which compiles comm/nccl_kernels.cu
#include "comm/nccl_kernels.h"
#endif
#include "common/error.h"
#include "common/log.h"

namespace dgr::comm {

namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_dtype(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return ncclFloat32;
    case DType::kBFloat16: return ncclBfloat16;
    case DType::kInt32: return ncclInt32;
    case DType::kInt64: return ncclInt64;
  }
  throw ConfigError(fmt::format("nccl backend: unknown dtype {}", static_cast<int>(dtype)));
}

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// One collective as the flight recorder remembers it.
struct FlightRecord {
  uint64_t sequence = 0;  // 1-based call number; 0 marks an unused slot
  const char* collective = "";
  size_t count = 0;  // elements per rank (allgather: the send count)
  DType dtype = DType::kFloat32;
  size_t num_bytes = 0;
  int root = -1;  // broadcast only
  Clock::time_point start;
  Clock::time_point end;
  bool done = false;
};

// The last kCapacity collectives of this rank, dumped when one of them fails or times out (PyTorch's
// NCCL flight recorder, in small): comparing the dumps of all ranks shows who stopped or diverged.
class FlightRecorder {
 public:
  static constexpr size_t kCapacity = 16;

  FlightRecord& begin(uint64_t sequence, const char* collective, size_t count, DType dtype, int root) {
    FlightRecord& record = records_[sequence % kCapacity];
    record = FlightRecord{};
    record.sequence = sequence;
    record.collective = collective;
    record.count = count;
    record.dtype = dtype;
    record.num_bytes = count * dtype_bytes(dtype);
    record.root = root;
    record.start = Clock::now();
    return record;
  }

  // One line per remembered collective, oldest first.
  std::string dump(Clock::time_point now) const {
    std::vector<const FlightRecord*> used;  // [i], by sequence
    for (const FlightRecord& record : records_) {
      if (record.sequence != 0) used.push_back(&record);
    }
    std::sort(used.begin(), used.end(),
              [](const FlightRecord* a, const FlightRecord* b) { return a->sequence < b->sequence; });
    std::string text;
    for (const FlightRecord* record : used) {
      text += fmt::format("\n  #{} {} count={} dtype={} bytes={}{} {}", record->sequence, record->collective,
                          record->count, dtype_name(record->dtype), record->num_bytes,
                          record->root >= 0 ? fmt::format(" root={}", record->root) : std::string(),
                          record->done ? fmt::format("done in {:.3f} ms", ms_between(record->start, record->end))
                                       : fmt::format("NOT DONE after {:.0f} ms", ms_between(record->start, now)));
    }
    return text;
  }

 private:
  std::array<FlightRecord, kCapacity> records_{};  // [sequence % kCapacity]
};

// Makes `device` current for the scope of one call and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    DGR_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) DGR_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// Thrown inside a collective when its deadline passes; turned into CommError by run_collective.
struct DeadlinePassed {
  std::string what;  // "waiting for ..."
};

// Balanced split of `num_elements` into `num_chunks` contiguous chunks: the first num_elements % num_chunks
// chunks hold one element more.
struct ChunkLayout {
  size_t num_elements = 0;
  size_t num_chunks = 1;
  size_t count(size_t chunk) const {
    return num_elements / num_chunks + (chunk < num_elements % num_chunks ? 1 : 0);
  }
  size_t offset(size_t chunk) const {
    return chunk * (num_elements / num_chunks) + std::min(chunk, num_elements % num_chunks);
  }
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const Options& options, const World& world, NcclAlgorithm algorithm)
      : options_(options), algorithm_(algorithm), rank_(world.rank()), size_(world.size()),
        logger_(log::get("comm")) {
    DGR_CHECK_AS(ConfigError, options.timeout_ms > 0, "comm timeout_ms must be positive, found {}",
                 options.timeout_ms);
    check_every_rank_has_a_gpu(world);
    try {
      create(world);
    } catch (...) {
      release();
      throw;
    }
  }

  ~NcclCommunicator() override {
    try {
      finalize();
    } catch (const std::exception& e) {
      logger_->error("nccl communicator teardown: {}", e.what());
    }
    release();
  }

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  const char* name() const override { return algorithm_ == NcclAlgorithm::kNccl ? "nccl" : "nccl-ring"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  uint64_t num_collectives() const override { return num_collectives_; }
  bool accepts(Device device) const override { return device == Device::kCuda; }

  void allreduce(Buffer buffer, ReduceOp op) override {
    check_device_buffer(buffer, "allreduce", "buffer");
#ifndef DGR_NCCL_RING_KERNELS
    DGR_CHECK_AS(ConfigError, algorithm_ != NcclAlgorithm::kSendRecvRing,
                 "allreduce: the NCCL send/recv ring needs comm/nccl_kernels.cu, which this build did not compile "
                 "(comm/CMakeLists.txt must include comm/nccl.cmake); use the default NCCL algorithm");
#endif
    run_collective("allreduce", buffer.count, buffer.dtype, -1, [&] {
      if (buffer.count == 0) return;
      if (algorithm_ == NcclAlgorithm::kSendRecvRing) {
        ring_allreduce(buffer, op);
      } else {
        nccl_call(ncclAllReduce(buffer.data, buffer.data, buffer.count, nccl_dtype(buffer.dtype),
                                op == ReduceOp::kAverage ? ncclAvg : ncclSum, comm_, stream_),
                  "ncclAllReduce", __LINE__);
      }
    });
  }

  void broadcast(Buffer buffer, int root) override {
    DGR_CHECK_AS(ConfigError, root >= 0 && root < size_, "broadcast: root {} is not a rank of this world of {}",
                 root, size_);
    check_device_buffer(buffer, "broadcast", "buffer");
    run_collective("broadcast", buffer.count, buffer.dtype, root, [&] {
      if (buffer.count == 0) return;
      if (algorithm_ == NcclAlgorithm::kSendRecvRing) {
        ring_broadcast(buffer, root);
      } else {
        nccl_call(ncclBroadcast(buffer.data, buffer.data, buffer.count, nccl_dtype(buffer.dtype), root, comm_,
                                stream_),
                  "ncclBroadcast", __LINE__);
      }
    });
  }

  void allgather(Buffer send, Buffer recv) override {
    DGR_CHECK_AS(ConfigError, send.dtype == recv.dtype, "allgather: send is {} but recv is {}",
                 dtype_name(send.dtype), dtype_name(recv.dtype));
    DGR_CHECK_AS(ConfigError, recv.count == send.count * static_cast<size_t>(size_),
                 "allgather: recv.count must be size() * send.count = {} * {} = {}, found {}", size_, send.count,
                 send.count * static_cast<size_t>(size_), recv.count);
    check_device_buffer(send, "allgather", "send");
    check_device_buffer(recv, "allgather", "recv");
    run_collective("allgather", send.count, send.dtype, -1, [&] {
      if (send.count == 0) return;
      if (algorithm_ == NcclAlgorithm::kSendRecvRing) {
        ring_allgather(send, recv);
      } else {
        nccl_call(ncclAllGather(send.data, recv.data, send.count, nccl_dtype(send.dtype), comm_, stream_),
                  "ncclAllGather", __LINE__);
      }
    });
  }

  // A 1-element allreduce through NCCL (every rank's GPU work queue reached this point), then MPI_Barrier.
  void barrier() override {
    run_collective("barrier", 1, DType::kInt32, -1, [&] {
      nccl_call(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclInt32, ncclSum, comm_, stream_),
                "ncclAllReduce(barrier)", __LINE__);
    });
    DGR_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  }

 private:
  // Every rank learns whether every rank has a GPU of its own, so all of them fail together, with the
  // same message, instead of some waiting for the others in ncclCommInitRank.
  void check_every_rank_has_a_gpu(const World& world) {
    int device_count = 0;
    cudaError_t error = cudaGetDeviceCount(&device_count);
    std::string local_problem;
    if (error != cudaSuccess) {
      local_problem = fmt::format("cudaGetDeviceCount: {}", cudaGetErrorString(error));
      cudaGetLastError();
      device_count = 0;
    }
    std::array<int, 2> mine = {device_count, world.local_size()};  // [GPUs on my host, ranks on my host]
    std::vector<int> all(2 * static_cast<size_t>(size_));          // [rank * 2 + {0, 1}]
    DGR_MPI_CHECK(MPI_Allgather(mine.data(), 2, MPI_INT, all.data(), 2, MPI_INT, MPI_COMM_WORLD));
    std::vector<int> without_gpu;  // [i] rank
    std::vector<int> shared_gpu;   // [i] rank
    for (int r = 0; r < size_; ++r) {
      if (all[2 * r] <= 0) {
        without_gpu.push_back(r);
      } else if (all[2 * r + 1] > all[2 * r]) {
        shared_gpu.push_back(r);
      }
    }
    if (without_gpu.empty() && shared_gpu.empty()) {
      device_ = world.local_rank() % device_count;
      return;
    }
    std::string message = "the nccl backend needs one CUDA GPU per rank, but";
    if (!without_gpu.empty()) {
      message += fmt::format(" rank(s) {} see no usable GPU", fmt::join(without_gpu, ","));
      if (!local_problem.empty()) message += fmt::format(" (here: {})", local_problem);
    }
    if (!shared_gpu.empty()) {
      message += fmt::format("{} rank(s) {} run on a host with more ranks than GPUs ({} ranks, {} GPUs here)",
                             without_gpu.empty() ? "" : " and", fmt::join(shared_gpu, ","), world.local_size(),
                             device_count);
    }
    message += ": use the 'ring' or 'mpi' backend on CPUs, or start at most one rank per GPU";
    throw CommError(::dgr::detail::where(__FILE__, __LINE__) + message + detail::gpu_where_suffix());
  }

  void create(const World& world) {
    DGR_CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id{};
    if (rank_ == 0) DGR_NCCL_CHECK(ncclGetUniqueId(&id));
    DGR_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof(id)), MPI_BYTE, 0, MPI_COMM_WORLD));
    DGR_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    DGR_CUDA_CHECK(cudaEventCreateWithFlags(&inputs_ready_, cudaEventDisableTiming));
    DGR_CUDA_CHECK(cudaMalloc(&barrier_word_, sizeof(int32_t)));
    DGR_CUDA_CHECK(cudaMemset(barrier_word_, 0, sizeof(int32_t)));

    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = start + std::chrono::milliseconds(options_.timeout_ms);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // every NCCL call returns at once; we poll ncclCommGetAsyncError with a deadline
    DGR_NCCL_CHECK_ASYNC(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config));
    try {
      wait_until_ready(deadline);
    } catch (const DeadlinePassed& late) {
      abort_communicator();
      throw CommError(::dgr::detail::where(__FILE__, __LINE__) +
                      fmt::format("NCCL communicator of {} ranks not created within {} ms ({}); some rank did not "
                                  "start, cannot reach the others (NCCL_SOCKET_IFNAME?) or is stuck: run with "
                                  "NCCL_DEBUG=INFO",
                                  size_, options_.timeout_ms, late.what) +
                      detail::gpu_where_suffix());
    } catch (const CommError&) {
      abort_communicator();
      throw;
    }
    const double init_ms = ms_between(start, Clock::now());

    int version_code = 0;  // e.g. 22809 for 2.28.9
    DGR_NCCL_CHECK(ncclGetVersion(&version_code));
    const std::string version =
        fmt::format("{}.{}.{}", version_code / 10000, version_code % 10000 / 100, version_code % 100);
    cudaDeviceProp properties{};
    DGR_CUDA_CHECK(cudaGetDeviceProperties(&properties, device_));
    logger_->debug("nccl communicator ready: algorithm={} rank={} size={} host={} local_rank={} gpu={} ({}) "
                   "nccl={} init_ms={:.1f} timeout_ms={}",
                   name(), rank_, size_, world.host(), world.local_rank(), device_, properties.name, version,
                   init_ms, options_.timeout_ms);
    if (rank_ == 0) {
      logger_->info("nccl backend: {} ranks, algorithm={}, NCCL {}, {}, init_ms={:.1f}", size_, name(), version,
                    properties.name, init_ms);
    }
  }

  // Waits for the pending operations to drain and destroys the communicator (within the deadline; aborts
  // it otherwise). Never called on an aborted communicator.
  void finalize() {
    if (comm_ == nullptr) return;
    DeviceGuard guard(device_);
    const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
    try {
      DGR_NCCL_CHECK_ASYNC(ncclCommFinalize(comm_));
      wait_until_ready(deadline);
    } catch (const DeadlinePassed& late) {
      logger_->error("nccl communicator teardown did not finish within {} ms ({}): aborting it",
                     options_.timeout_ms, late.what);
      abort_communicator();
      return;
    } catch (const CommError& e) {
      logger_->error("nccl communicator teardown failed: {}; aborting it", e.what());
      abort_communicator();
      return;
    }
    ncclComm_t comm = std::exchange(comm_, nullptr);
    DGR_NCCL_CHECK_ASYNC(ncclCommDestroy(comm));
  }

  // Frees what the constructor allocated; safe on a partly built object and after abort.
  void release() noexcept {
    if (comm_ != nullptr) abort_communicator();
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (barrier_word_ != nullptr) cudaFree(barrier_word_);
    if (inputs_ready_ != nullptr) cudaEventDestroy(inputs_ready_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    inputs_ready_ = nullptr;
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    barrier_word_ = nullptr;
    stream_ = nullptr;
  }

  void abort_communicator() noexcept {
    ncclComm_t comm = std::exchange(comm_, nullptr);
    if (comm != nullptr) {
      ncclResult_t result = ncclCommAbort(comm);
      if (result != ncclSuccess && result != ncclInProgress) {
        logger_->error("ncclCommAbort failed: {}", ncclGetErrorString(result));
      }
    }
    aborted_ = true;
  }

  void check_device_buffer(const Buffer& buffer, const char* collective, const char* which) const {
    DGR_CHECK_AS(ConfigError, buffer.device == Device::kCuda,
                 "{}: the nccl backend reduces GPU buffers, but {} is a CPU buffer; use the 'ring' or "
                 "'mpi' backend for CPU tensors",
                 collective, which);
    if (buffer.count == 0) return;
    DGR_CHECK_AS(ConfigError, buffer.data != nullptr, "{}: {} has {} elements but data is null", collective,
                 which, buffer.count);
    cudaPointerAttributes attributes{};
    cudaError_t error = cudaPointerGetAttributes(&attributes, buffer.data);
    if (error != cudaSuccess) cudaGetLastError();
    const bool on_gpu = error == cudaSuccess && (attributes.type == cudaMemoryTypeDevice ||
                                                 attributes.type == cudaMemoryTypeManaged);
    DGR_CHECK_AS(ConfigError, on_gpu,
                 "{}: {} is marked Device::kCuda but {} is not GPU memory (memory type {}); pass a CUDA "
                 "tensor's data_ptr(), or use the 'ring' or 'mpi' backend for CPU tensors",
                 collective, which, buffer.data, static_cast<int>(attributes.type));
    DGR_CHECK_AS(ConfigError, attributes.type == cudaMemoryTypeManaged || attributes.device == device_,
                 "{}: {} lives on GPU {} but this rank's communicator uses GPU {} (local rank % GPU count)",
                 collective, which, attributes.device, device_);
  }

  // Note [Input ordering]
  // Buffers arrive as raw pointers, without the stream that wrote them. Each collective makes stream_ wait
  // for everything queued so far on the legacy default stream (where LibTorch computes unless told
  // otherwise), and returns only when its own work is done, so later work anywhere sees the result. Data
  // written on any other stream must be synchronised by the caller first.

  // Runs one collective: `enqueue` puts its work on stream_, then this waits for the stream with the
  // deadline. A timeout or a CUDA/NCCL error logs the flight recorder, aborts the communicator and throws
  // CommError. Every rank calls the collectives in the same order.
  template <typename Enqueue>
  void run_collective(const char* collective, size_t count, DType dtype, int root, Enqueue&& enqueue) {
    DGR_CHECK_AS(CommError, !aborted_,
                 "{}: the NCCL communicator was aborted after an earlier failure (see the comm log); make a new "
                 "one, or end the job",
                 collective);
    DeviceGuard guard(device_);
    const uint64_t sequence = ++num_collectives_;
    FlightRecord& record = recorder_.begin(sequence, collective, count, dtype, root);
    const Clock::time_point deadline = record.start + std::chrono::milliseconds(options_.timeout_ms);
    try {
      enqueue_deadline_ = deadline;
      // Note [Input ordering]: start after the work queued so far on the legacy default stream.
      DGR_CUDA_CHECK(cudaEventRecord(inputs_ready_, cudaStreamLegacy));
      DGR_CUDA_CHECK(cudaStreamWaitEvent(stream_, inputs_ready_, 0));
      enqueue();
      wait_for_stream(deadline);
    } catch (const DeadlinePassed& late) {
      fail(record,
           fmt::format("did not finish within {} ms ({}); another rank probably stopped, died or called a "
                       "different collective: compare the ranks' comm logs (last {} collectives)",
                       options_.timeout_ms, late.what, FlightRecorder::kCapacity) +
               detail::gpu_where_suffix());
    } catch (const CommError& e) {
      fail(record, e.what());  // already names the call, the rank, the host and the GPU
    }
    record.end = Clock::now();
    record.done = true;
    num_bytes_ += record.num_bytes;
  }

  [[noreturn]] void fail(const FlightRecord& record, const std::string& reason) {
    const Clock::time_point now = Clock::now();
    logger_->error("nccl {} #{} (count={} dtype={} bytes={}{}) failed after {:.0f} ms: {}", record.collective,
                   record.sequence, record.count, dtype_name(record.dtype), record.num_bytes,
                   record.root >= 0 ? fmt::format(" root={}", record.root) : std::string(),
                   ms_between(record.start, now), reason);
    logger_->error("flight recorder of rank {} (algorithm={}, oldest first):{}", rank_, name(), recorder_.dump(now));
    abort_communicator();
    logger_->error("nccl communicator aborted");
    log::flush();
    throw CommError(fmt::format("nccl {} #{} ({} bytes) failed: {}", record.collective, record.sequence,
                                record.num_bytes, reason));
  }

  // Checks an NCCL enqueue call on the non-blocking communicator and waits until the communicator accepts
  // the next call.
  void nccl_call(ncclResult_t result, const char* call, int line) {
    if (result != ncclSuccess && result != ncclInProgress) {
      throw CommError(detail::nccl_failure(__FILE__, line, call, result));
    }
    if (result == ncclInProgress) wait_until_ready(enqueue_deadline_);
  }

  // Polls ncclCommGetAsyncError until the communicator leaves ncclInProgress.
  void wait_until_ready(Clock::time_point deadline) {
    const Clock::time_point start = Clock::now();
    for (;;) {
      ncclResult_t state = ncclInProgress;
      DGR_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) {
        throw CommError(detail::nccl_failure(__FILE__, __LINE__, "ncclCommGetAsyncError (asynchronous error)", state));
      }
      const Clock::time_point now = Clock::now();
      if (now >= deadline) throw DeadlinePassed{"NCCL communicator still in progress"};
      back_off(now - start);
    }
  }

  // Polls the stream until its work is done, checking the communicator for asynchronous errors.
  void wait_for_stream(Clock::time_point deadline) {
    const Clock::time_point start = Clock::now();
    for (;;) {
      cudaError_t query = cudaStreamQuery(stream_);
      if (query == cudaSuccess) return;
      if (query != cudaErrorNotReady) throw CommError(detail::cuda_failure(__FILE__, __LINE__, "cudaStreamQuery", query));
      ncclResult_t state = ncclSuccess;
      DGR_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
      if (state != ncclSuccess && state != ncclInProgress) {
        throw CommError(detail::nccl_failure(__FILE__, __LINE__, "ncclCommGetAsyncError (asynchronous error)", state));
      }
      const Clock::time_point now = Clock::now();
      if (now >= deadline) throw DeadlinePassed{"GPU work of the collective still running"};
      back_off(now - start);
    }
  }

  // Spin (yielding) for the first 2 ms, which covers small collectives, then sleep in 100 us steps.
  static void back_off(Clock::duration waited) {
    if (waited < std::chrono::milliseconds(2)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  void ensure_scratch(size_t num_bytes) {
    if (num_bytes <= scratch_bytes_) return;
    if (scratch_ != nullptr) {
      DGR_CUDA_CHECK(cudaStreamSynchronize(stream_));
      DGR_CUDA_CHECK(cudaFree(scratch_));
      scratch_ = nullptr;
      scratch_bytes_ = 0;
    }
    DGR_CUDA_CHECK(cudaMalloc(&scratch_, num_bytes));
    scratch_bytes_ = num_bytes;
  }

  // One ncclGroupStart/End pair. end() waits until the non-blocking communicator accepted the group; a
  // group left open by an exception is closed (NCCL's group depth is per thread) before the abort.
  class Group {
   public:
    explicit Group(NcclCommunicator& owner) : owner_(owner) { DGR_NCCL_CHECK(ncclGroupStart()); }
    ~Group() {
      if (open_) ncclGroupEnd();
    }
    Group(const Group&) = delete;
    Group& operator=(const Group&) = delete;
    void end() {
      open_ = false;
      owner_.nccl_call(ncclGroupEnd(), "ncclGroupEnd", __LINE__);
    }

   private:
    NcclCommunicator& owner_;
    bool open_ = true;
  };

  // Note [Send/recv ring]
  // The classic ring allreduce, written out with NCCL point-to-point calls (as a baseline for NCCL's own
  // algorithms and as the reference of dgr's CPU ring). The buffer of num_elements is split into size()
  // chunks (ChunkLayout); rank r sends to its right neighbour r+1 and receives from its left neighbour
  // r-1 (mod size()).
  //  - Reduce-scatter, size()-1 steps: at step s rank r sends chunk (r - s) and receives chunk (r - s - 1)
  //    into scratch_, then adds scratch_ into its own copy of that chunk (kernels::add_into). After the
  //    last step, chunk (r + 1) of rank r holds the sum over all ranks; for an average it is divided by
  //    size() there, once.
  //  - Allgather, size()-1 steps: at step s rank r sends chunk (r + 1 - s) and receives chunk (r - s)
  //    straight into the buffer.
  // Each step is one ncclGroupStart/End pair (send and receive must be in flight together or the ring
  // deadlocks); steps and kernels are ordered by the one stream. Per rank this moves 2(n-1)/n of the buffer.
  void ring_allreduce(const Buffer& buffer, ReduceOp op) {
#ifdef DGR_NCCL_RING_KERNELS
    if (size_ == 1) return;  // the sum and the average of one rank are its own buffer
    const size_t num_ranks = static_cast<size_t>(size_);
    const size_t element_bytes = dtype_bytes(buffer.dtype);
    const ChunkLayout chunks{buffer.count, num_ranks};
    const size_t rank = static_cast<size_t>(rank_);
    const int right = static_cast<int>((rank + 1) % num_ranks);
    const int left = static_cast<int>((rank + num_ranks - 1) % num_ranks);
    const ncclDataType_t dtype = nccl_dtype(buffer.dtype);
    char* data = static_cast<char*>(buffer.data);
    ensure_scratch(chunks.count(0) * element_bytes);  // chunk 0 is the largest

    for (size_t step = 0; step + 1 < num_ranks; ++step) {
      const size_t send_chunk = (rank + num_ranks - step) % num_ranks;
      const size_t recv_chunk = (rank + 2 * num_ranks - step - 1) % num_ranks;
      Group group(*this);
      if (chunks.count(send_chunk) > 0) {
        DGR_NCCL_CHECK_ASYNC(ncclSend(data + chunks.offset(send_chunk) * element_bytes, chunks.count(send_chunk),
                                      dtype, right, comm_, stream_));
      }
      if (chunks.count(recv_chunk) > 0) {
        DGR_NCCL_CHECK_ASYNC(ncclRecv(scratch_, chunks.count(recv_chunk), dtype, left, comm_, stream_));
      }
      group.end();
      DGR_CUDA_CHECK(kernels::add_into(data + chunks.offset(recv_chunk) * element_bytes, scratch_,
                                       chunks.count(recv_chunk), buffer.dtype, stream_));
    }
    const size_t reduced_chunk = (rank + 1) % num_ranks;
    if (op == ReduceOp::kAverage && num_ranks > 1) {
      DGR_CUDA_CHECK(kernels::divide(data + chunks.offset(reduced_chunk) * element_bytes, chunks.count(reduced_chunk),
                                     buffer.dtype, size_, stream_));
    }
    for (size_t step = 0; step + 1 < num_ranks; ++step) {
      const size_t send_chunk = (rank + 1 + num_ranks - step) % num_ranks;
      const size_t recv_chunk = (rank + num_ranks - step) % num_ranks;
      Group group(*this);
      if (chunks.count(send_chunk) > 0) {
        DGR_NCCL_CHECK_ASYNC(ncclSend(data + chunks.offset(send_chunk) * element_bytes, chunks.count(send_chunk),
                                      dtype, right, comm_, stream_));
      }
      if (chunks.count(recv_chunk) > 0) {
        DGR_NCCL_CHECK_ASYNC(ncclRecv(data + chunks.offset(recv_chunk) * element_bytes, chunks.count(recv_chunk),
                                      dtype, left, comm_, stream_));
      }
      group.end();
    }
#else
    (void)buffer;
    (void)op;
#endif  // DGR_NCCL_RING_KERNELS
  }

  // A pipelined chain from the root: the rank at distance p from the root receives segment k from its
  // left neighbour at step k + p - 1 and forwards it to its right neighbour at step k + p (segments of
  // options.segment_bytes). The last rank of the chain only receives.
  void ring_broadcast(const Buffer& buffer, int root) {
    if (size_ == 1) return;
    const size_t num_ranks = static_cast<size_t>(size_);
    const size_t element_bytes = dtype_bytes(buffer.dtype);
    const size_t segment_elements = std::max<size_t>(1, options_.segment_bytes / element_bytes);
    const size_t num_segments = (buffer.count + segment_elements - 1) / segment_elements;
    const size_t position = (static_cast<size_t>(rank_) + num_ranks - static_cast<size_t>(root)) % num_ranks;
    const int right = static_cast<int>((static_cast<size_t>(rank_) + 1) % num_ranks);
    const int left = static_cast<int>((static_cast<size_t>(rank_) + num_ranks - 1) % num_ranks);
    const ncclDataType_t dtype = nccl_dtype(buffer.dtype);
    char* data = static_cast<char*>(buffer.data);
    const size_t num_steps = num_segments + num_ranks - 2;
    for (size_t step = 0; step < num_steps; ++step) {
      // Segment received (position >= 1) and sent (position <= n-2) at this step, if any.
      const bool receives = position >= 1 && step + 1 >= position && step + 1 - position < num_segments;
      const bool sends = position + 1 < num_ranks && step >= position && step - position < num_segments;
      if (!receives && !sends) continue;
      Group group(*this);
      if (receives) {
        const size_t segment = step + 1 - position;
        const size_t first = segment * segment_elements;
        DGR_NCCL_CHECK_ASYNC(ncclRecv(data + first * element_bytes, std::min(segment_elements, buffer.count - first),
                                      dtype, left, comm_, stream_));
      }
      if (sends) {
        const size_t segment = step - position;
        const size_t first = segment * segment_elements;
        DGR_NCCL_CHECK_ASYNC(ncclSend(data + first * element_bytes, std::min(segment_elements, buffer.count - first),
                                      dtype, right, comm_, stream_));
      }
      group.end();
    }
  }

  // Copies the own block into place, then size()-1 ring steps: at step s rank r sends block (r - s) to
  // the right and receives block (r - s - 1) from the left.
  void ring_allgather(const Buffer& send, const Buffer& recv) {
    const size_t num_ranks = static_cast<size_t>(size_);
    const size_t block_bytes = send.num_bytes();
    const size_t rank = static_cast<size_t>(rank_);
    const int right = static_cast<int>((rank + 1) % num_ranks);
    const int left = static_cast<int>((rank + num_ranks - 1) % num_ranks);
    const ncclDataType_t dtype = nccl_dtype(send.dtype);
    char* blocks = static_cast<char*>(recv.data);  // [rank][send.count]
    if (blocks + rank * block_bytes != send.data) {
      DGR_CUDA_CHECK(cudaMemcpyAsync(blocks + rank * block_bytes, send.data, block_bytes, cudaMemcpyDeviceToDevice,
                                     stream_));
    }
    for (size_t step = 0; step + 1 < num_ranks; ++step) {
      const size_t send_block = (rank + num_ranks - step) % num_ranks;
      const size_t recv_block = (rank + 2 * num_ranks - step - 1) % num_ranks;
      Group group(*this);
      DGR_NCCL_CHECK_ASYNC(ncclSend(blocks + send_block * block_bytes, send.count, dtype, right, comm_, stream_));
      DGR_NCCL_CHECK_ASYNC(ncclRecv(blocks + recv_block * block_bytes, send.count, dtype, left, comm_, stream_));
      group.end();
    }
  }

  const Options options_;
  const NcclAlgorithm algorithm_;
  const int rank_;
  const int size_;
  std::shared_ptr<spdlog::logger> logger_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;  // non-blocking; see Note [Input ordering]
  cudaEvent_t inputs_ready_ = nullptr;  // recorded on the legacy default stream at the start of a collective
  void* scratch_ = nullptr;  // ring: the chunk received at one reduce-scatter step
  size_t scratch_bytes_ = 0;
  int32_t* barrier_word_ = nullptr;  // [1] on the GPU
  bool aborted_ = false;
  uint64_t num_collectives_ = 0;
  uint64_t num_bytes_ = 0;  // per-rank payload bytes of the finished collectives
  Clock::time_point enqueue_deadline_;  // deadline of the collective being enqueued
  FlightRecorder recorder_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const Options& options, const World& world,
                                                     NcclAlgorithm algorithm) {
  return std::make_unique<NcclCommunicator>(options, world, algorithm);
}

}  // namespace dgr::comm

#endif  // DGR_HAVE_NCCL
