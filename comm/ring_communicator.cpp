// The "ring" backend: allreduce as a reduce-scatter followed by an allgather around a ring of ranks, over
// MPI point-to-point messages (MPI_Isend/MPI_Irecv on a private duplicate of MPI_COMM_WORLD), segmented and
// pipelined.
//
// The ring (after gloo's allreduce_ring_chunked)
// ----------------------------------------------
// The W ranks form a ring: rank r sends to its right neighbour r+1 and receives from its left neighbour
// r-1 (mod W). The buffer of `count` elements is cut into W chunks, one per rank: count / W elements each,
// the first count % W chunks one element longer, so chunk sizes differ by at most one (and with
// count < W some chunks are empty).
//
// Reduce-scatter, steps 0 .. W-2: at step s rank r sends chunk (r - s) and receives chunk (r - s - 1), which
// it adds into its own copy of that chunk. The chunk a rank sends at step s+1 is the one it has just
// reduced at step s, so after W-1 steps rank r holds chunk (r + 1) summed over all W ranks. For kAverage the
// last addition also divides by W, once, in the dtype's arithmetic.
//
// Allgather, steps W-1 .. 2W-3: the same walk with copies instead of additions. Rank r first sends its
// finished chunk (r + 1) and receives chunk r, straight into its place in the buffer, and so on; after W-1
// more steps every rank holds every reduced chunk. One pair of formulas covers both phases (mod W):
//
//   send_chunk(step) = r - step          recv_chunk(step) = r - step - 1
//
// Each rank sends and receives 2(W-1)/W of the buffer, the least any allreduce can (hence "bus bandwidth"
// = algorithm bandwidth x 2(W-1)/W).
//
// Segments and the pipeline
// -------------------------
// A step that moved a whole chunk would leave the link idle while the chunk is reduced, and the reduction
// would read the received chunk back from memory. So every chunk is cut into segments of
// options.segment_bytes, num_segments per chunk (the same number for every chunk: the last segments of a
// shorter chunk may be empty, and both sides skip them). The unit of work is (step, segment), numbered
// unit = step * num_segments + segment, and the only dependence between units is the ring's own:
//
//   send(step, segment) may start once recv(step - 1, segment) has been reduced (or placed).
//
// So segment 0 of step 1 leaves while segment 1 of step 0 is still arriving: the steps overlap and the
// pipeline is 2(W-1) + num_segments segments long instead of 2(W-1) chunks. Reduce-scatter receives land in
// kNumSlots segment-sized scratch slots (slot = unit % kNumSlots) and up to kNumSlots receives are posted
// ahead, so the receive of segment j+1 is already posted while segment j is reduced, from the slot it has
// just been copied into, still in cache. Allgather receives go straight into the buffer: no copy but MPI's
// (one, process to process, for messages above Open MPI's eager limit). Sends are posted in unit order and
// receives in unit order, so MPI's non-overtaking rule pairs them without a tag per unit.
//
// One hazard: the allgather receive of unit u overwrites the chunk this rank sent at the reduce-scatter
// unit u - (W-1) * num_segments, so that receive is posted only after that send has completed.
//
// Every send and receive is non-blocking and polled with MPI_Test against the call's deadline (mpi_base.h).
// Broadcast is a pipelined chain root -> root+1 -> ... over the same segments; allgather is the allgather
// phase alone, with one rank's block as the chunk; barrier is MPI_Ibarrier.
//
// Tuning (measured with bench/allreduce_bench, 2 ranks on the 2-core development VM, Open MPI 4.1 vader)
// ------------------------------------------------------------------------------------------------------
// - Above 32 KiB a message goes by Open MPI's single copy (CMA, process_vm_readv, done by the receiver),
//   which copies at ~6.5 GB/s there against ~17 GB/s for memcpy: it bounds the ring's bandwidth. With
//   btl_vader_single_copy_mechanism=none the sender and the receiver share the copying and the ring ran
//   1.3-2x faster at 1-16 MiB. Segments under 32 KiB (to dodge CMA) were 2-3x slower: a handshake
//   per message.
// - 256 KiB, 1 MiB and 4 MiB segments and 2, 4 or 8 receives/sends in flight measured within noise of
//   each other; 1 MiB (the Options default) and 4 are kept.
// - Waiting spins on MPI_Test. Yielding the core (sched_yield) after a short spin cost a whole timeslice
//   per collective on a loaded machine (256 KiB allreduce: 35 us -> 3.7 ms).
#include "comm/ring_communicator.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "comm/reduce_kernels.h"
#include "common/error.h"

namespace dgr::comm::detail {
namespace {

constexpr int kTagRing = 1;       // allreduce and allgather units
constexpr int kTagBroadcast = 2;  // broadcast segments
constexpr size_t kMaxSegmentBytes = size_t{1} << 30;

int ring_mod(int value, int size) { return ((value % size) + size) % size; }

size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// The chunks of a buffer of `count` elements over `num_chunks` ranks: count / num_chunks elements each, the
// first count % num_chunks one longer.
struct ChunkLayout {
  size_t count = 0;
  size_t num_chunks = 1;
  size_t chunk_begin(int chunk) const {
    const size_t c = static_cast<size_t>(chunk);
    return c * (count / num_chunks) + std::min(c, count % num_chunks);
  }
  size_t chunk_count(int chunk) const {
    return count / num_chunks + (static_cast<size_t>(chunk) < count % num_chunks ? 1 : 0);
  }
  size_t max_chunk_count() const { return ceil_div(count, num_chunks); }
};

struct Span {
  char* data = nullptr;
  size_t num_bytes = 0;
};

void post_send(const Span& span, int peer, int tag, MPI_Comm comm, MPI_Request* request) {
  *request = MPI_REQUEST_NULL;
  if (span.num_bytes == 0) return;  // an empty segment: the receiver skips it too
  DGR_MPI_CHECK(MPI_Isend(span.data, static_cast<int>(span.num_bytes), MPI_BYTE, peer, tag, comm, request));
}

// Checked before the base class's collective set-up, so a bad value fails every rank the same way at once.
const Options& checked_segment(const Options& options) {
  DGR_CHECK_AS(ConfigError, options.segment_bytes >= 1 && options.segment_bytes <= kMaxSegmentBytes,
               "comm segment_bytes must be in [1, {}], got {} (the default, 1 MiB, suits most machines)",
               kMaxSegmentBytes, options.segment_bytes);
  return options;
}

void post_recv(char* target, size_t num_bytes, int peer, int tag, MPI_Comm comm, MPI_Request* request) {
  *request = MPI_REQUEST_NULL;
  if (num_bytes == 0) return;
  DGR_MPI_CHECK(MPI_Irecv(target, static_cast<int>(num_bytes), MPI_BYTE, peer, tag, comm, request));
}

}  // namespace

struct RingCommunicator::RingPlan {
  char* data = nullptr;  // the buffer, worked on in place
  DType dtype = DType::kFloat32;
  size_t element_bytes = 0;
  ChunkLayout chunks;
  size_t segment_count = 1;  // elements per segment
  size_t num_segments = 0;   // per chunk
  int num_steps = 0;         // 2(W-1) for allreduce, W-1 for allgather
  int num_reduce_steps = 0;  // the reduce-scatter's W-1 for allreduce, 0 for allgather
  int divisor = 1;           // kAverage: W, applied by the last reduce-scatter step

  // Segment `segment` of chunk `chunk`; empty past the end of a shorter chunk.
  Span segment_span(int chunk, size_t segment) const {
    const size_t chunk_count = chunks.chunk_count(chunk);
    const size_t first = segment * segment_count;
    if (first >= chunk_count) return {};
    const size_t count = std::min(segment_count, chunk_count - first);
    return {data + (chunks.chunk_begin(chunk) + first) * element_bytes, count * element_bytes};
  }
};

RingCommunicator::RingCommunicator(const Options& options, const World& world)
    : MpiCommunicatorBase(checked_segment(options), world) {
  slot_bytes_ = (std::max<size_t>(options.segment_bytes, sizeof(int64_t)) + 63) / 64 * 64;
  const size_t scratch_bytes = (kNumSlots * slot_bytes_ + 4095) / 4096 * 4096;
  scratch_.reset(static_cast<char*>(std::aligned_alloc(4096, scratch_bytes)));
  DGR_CHECK_AS(SystemError, scratch_ != nullptr, "cannot allocate {} bytes of ring scratch", scratch_bytes);
  std::memset(scratch_.get(), 0, scratch_bytes);  // fault the pages in now, not in the first allreduce
}

RingCommunicator::~RingCommunicator() {
  if (is_broken()) static_cast<void>(scratch_.release());
}

void RingCommunicator::allreduce(Buffer buffer, ReduceOp op) {
  check_buffer(buffer, "the allreduce buffer");
  Call call = begin(OpKind::kAllreduce, buffer.dtype, buffer.num_bytes(), op == ReduceOp::kSum ? "sum" : "average");
  if (size_ == 1 || buffer.count == 0) {  // the identity, also for kAverage (a division by 1)
    call.done();
    return;
  }
  RingPlan plan;
  plan.data = static_cast<char*>(buffer.data);
  plan.dtype = buffer.dtype;
  plan.element_bytes = dtype_bytes(buffer.dtype);
  plan.chunks = ChunkLayout{buffer.count, static_cast<size_t>(size_)};
  plan.segment_count = std::max<size_t>(1, options_.segment_bytes / plan.element_bytes);
  plan.num_segments = ceil_div(plan.chunks.max_chunk_count(), plan.segment_count);
  plan.num_steps = 2 * (size_ - 1);
  plan.num_reduce_steps = size_ - 1;
  plan.divisor = op == ReduceOp::kAverage ? size_ : 1;
  run_ring(call, plan);
  call.done();
}

void RingCommunicator::allgather(Buffer send, Buffer recv) {
  check_allgather_buffers(send, recv);
  Call call = begin(OpKind::kAllgather, send.dtype, send.num_bytes(), "");
  const size_t block_bytes = send.num_bytes();
  char* own_block = static_cast<char*>(recv.data) + static_cast<size_t>(rank_) * block_bytes;
  if (send.count > 0 && send.data != own_block) std::memcpy(own_block, send.data, block_bytes);
  if (size_ == 1 || send.count == 0) {
    call.done();
    return;
  }
  RingPlan plan;
  plan.data = static_cast<char*>(recv.data);
  plan.dtype = send.dtype;
  plan.element_bytes = dtype_bytes(send.dtype);
  plan.chunks = ChunkLayout{recv.count, static_cast<size_t>(size_)};  // chunk k = rank k's block
  plan.segment_count = std::max<size_t>(1, options_.segment_bytes / plan.element_bytes);
  plan.num_segments = ceil_div(send.count, plan.segment_count);
  plan.num_steps = size_ - 1;
  plan.num_reduce_steps = 0;
  run_ring(call, plan);
  call.done();
}

void RingCommunicator::run_ring(Call& call, const RingPlan& plan) {
  const int right = ring_mod(rank_ + 1, size_);
  const int left = ring_mod(rank_ - 1, size_);
  const size_t num_segments = plan.num_segments;
  const size_t num_units = static_cast<size_t>(plan.num_steps) * num_segments;
  // The allgather receive of unit u waits for the send of unit u - hazard_units (same chunk, see essay).
  const size_t hazard_units = static_cast<size_t>(plan.num_reduce_steps) * num_segments;
  auto send_chunk = [&](int step) { return ring_mod(rank_ - step, size_); };
  auto recv_chunk = [&](int step) { return ring_mod(rank_ - step - 1, size_); };

  std::array<MPI_Request, kNumSlots> recv_requests;          // [unit % kNumSlots]
  std::array<MPI_Request, kMaxSendsInFlight> send_requests;  // [unit % kMaxSendsInFlight]
  recv_requests.fill(MPI_REQUEST_NULL);
  send_requests.fill(MPI_REQUEST_NULL);
  size_t next_send = 0;        // units below have been posted for sending
  size_t sends_completed = 0;  // units below have been sent (retired oldest first)
  size_t next_recv = 0;        // units below have been posted for receiving
  size_t recvs_done = 0;       // units below have been received and reduced (or placed)

  while (recvs_done < num_units || sends_completed < num_units) {
    while (sends_completed < next_send && test(&send_requests[sends_completed % kMaxSendsInFlight])) {
      ++sends_completed;
    }
    // Sends whose segment is ready: step 0 at once, step s once recv(s - 1, segment) is done.
    while (next_send < num_units && next_send - sends_completed < kMaxSendsInFlight &&
           (next_send < num_segments || next_send - num_segments < recvs_done)) {
      const int step = static_cast<int>(next_send / num_segments);
      const Span span = plan.segment_span(send_chunk(step), next_send % num_segments);
      post_send(span, right, kTagRing, comm_, &send_requests[next_send % kMaxSendsInFlight]);
      ++next_send;
    }
    // Receives, up to kNumSlots ahead of the one being reduced.
    while (next_recv < num_units && next_recv - recvs_done < kNumSlots) {
      const int step = static_cast<int>(next_recv / num_segments);
      const bool reduces = step < plan.num_reduce_steps;
      if (!reduces && hazard_units > 0 && sends_completed <= next_recv - hazard_units) break;
      const Span span = plan.segment_span(recv_chunk(step), next_recv % num_segments);
      char* target = reduces ? slot(next_recv % kNumSlots) : span.data;
      post_recv(target, span.num_bytes, left, kTagRing, comm_, &recv_requests[next_recv % kNumSlots]);
      ++next_recv;
    }
    // The oldest receive: once here, reduce it from its slot (reduce-scatter) or take it as is (allgather).
    if (recvs_done < next_recv && test(&recv_requests[recvs_done % kNumSlots])) {
      const int step = static_cast<int>(recvs_done / num_segments);
      if (step < plan.num_reduce_steps) {
        const Span span = plan.segment_span(recv_chunk(step), recvs_done % num_segments);
        const int divisor = step == plan.num_reduce_steps - 1 ? plan.divisor : 1;
        reduce_into(span.data, slot(recvs_done % kNumSlots), span.num_bytes / plan.element_bytes, plan.dtype, divisor);
      }
      ++recvs_done;
      continue;
    }
    check_deadline(call);
  }
}

void RingCommunicator::broadcast(Buffer buffer, int root) {
  check_buffer(buffer, "the broadcast buffer");
  DGR_CHECK_AS(CommError, root >= 0 && root < size_, "broadcast root {} is not a rank (world size {})", root, size_);
  Call call = begin(OpKind::kBroadcast, buffer.dtype, buffer.num_bytes(), "");
  if (size_ == 1 || buffer.count == 0) {
    call.done();
    return;
  }
  // The chain root, root+1, ..., root-1: a rank receives each segment from its left neighbour straight into
  // the buffer and forwards it to the right as soon as it is there.
  const int position = ring_mod(rank_ - root, size_);
  const int right = ring_mod(rank_ + 1, size_);
  const int left = ring_mod(rank_ - 1, size_);
  const size_t element_bytes = dtype_bytes(buffer.dtype);
  const size_t segment_bytes = std::max<size_t>(1, options_.segment_bytes / element_bytes) * element_bytes;
  const size_t total_bytes = buffer.num_bytes();
  const size_t num_segments = ceil_div(total_bytes, segment_bytes);
  char* data = static_cast<char*>(buffer.data);
  auto segment_span = [&](size_t segment) {
    const size_t offset = segment * segment_bytes;
    return Span{data + offset, std::min(segment_bytes, total_bytes - offset)};
  };

  std::array<MPI_Request, kNumSlots> recv_requests;          // [segment % kNumSlots]
  std::array<MPI_Request, kMaxSendsInFlight> send_requests;  // [segment % kMaxSendsInFlight]
  recv_requests.fill(MPI_REQUEST_NULL);
  send_requests.fill(MPI_REQUEST_NULL);
  const bool receives = position != 0;
  const bool forwards = position != size_ - 1;
  size_t next_recv = receives ? 0 : num_segments;
  size_t recvs_done = next_recv;
  size_t next_send = forwards ? 0 : num_segments;
  size_t sends_completed = next_send;

  while (recvs_done < num_segments || sends_completed < num_segments) {
    while (sends_completed < next_send && test(&send_requests[sends_completed % kMaxSendsInFlight])) {
      ++sends_completed;
    }
    while (next_send < num_segments && next_send - sends_completed < kMaxSendsInFlight && next_send < recvs_done) {
      post_send(segment_span(next_send), right, kTagBroadcast, comm_, &send_requests[next_send % kMaxSendsInFlight]);
      ++next_send;
    }
    while (next_recv < num_segments && next_recv - recvs_done < kNumSlots) {
      const Span span = segment_span(next_recv);
      post_recv(span.data, span.num_bytes, left, kTagBroadcast, comm_, &recv_requests[next_recv % kNumSlots]);
      ++next_recv;
    }
    if (recvs_done < next_recv && test(&recv_requests[recvs_done % kNumSlots])) {
      ++recvs_done;
      continue;
    }
    check_deadline(call);
  }
  call.done();
}

}  // namespace dgr::comm::detail
