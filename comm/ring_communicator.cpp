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
// - The shared-memory path (below), fp32 sum, busbw: 21 GB/s at 256 KiB and 1 MiB, 25 at 4 MiB, 19-20 at
//   64-256 MiB, against 3.7-5.4 for MPI_Allreduce and 3.7-7 for the message ring (memcpy: 17-20 GB/s):
//   ~5x MPI_Allreduce from 4 MiB, about memcpy's speed from 256 KiB.
//
// The shared-memory path (allocate_shared, all ranks on one node)
// ---------------------------------------------------------------
// Open MPI moves a large message between two processes of one node with one kernel copy (CMA), at ~6.5 GB/s
// on the development VM against ~17 GB/s for memcpy: it bounds the ring above. When every rank is on one
// node (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) has all of them), allocate_shared makes an MPI shared
// window (MPI_Win_allocate_shared on the node communicator) and maps every rank's part of it here
// (MPI_Win_shared_query): a SharedRegion. An allreduce whose buffer lies inside a region on every rank, at
// the same offset, then reads and writes the peers' buffers directly:
//
//   entry barrier -> rank r reduces chunk r (the ring's ChunkLayout) from every rank's buffer into its own,
//   one block of kSharedBlockBytes at a time, and copies each reduced block into every peer's buffer at
//   once (still in cache) -> exit barrier.
//
// Chunk r is written only by rank r, in every buffer, and read only by rank r before the exit barrier, so
// the ranks never touch the same bytes at once. The additions into chunk r go in the ring's order (rank r's
// own values, then r+1, r+2, ... mod W, kAverage's division on the last one), so results are bit-identical
// to the ring's, bf16 rounding after every addition included. The exit barrier keeps a rank from changing
// its buffer (the next call) while a peer still reads or writes it.
//
// The control block is a second shared window (made by the first allocate_shared): one ControlSlot per rank
// on its own cache lines, written only by its rank: a counter and the buffer it published (region id,
// offset, bytes). Barrier e (entry 2e-1, exit 2e) stores the target with release semantics and spins until
// every rank's counter has reached it (acquire), checking the deadline; after kSharedSpins it sleeps on
// the slot's futex (woken by the store, or after 1 ms to check the deadline) instead of yielding: a
// sched_yield loop still takes a share of the core that the rank being waited for, or this rank's own
// backward (the reducer overlaps it), needs (Note [Sleeping waits]). A rank that stalls or dies thus
// becomes the usual timeout report. Every rank publishes at entry, then every rank compares all the slots;
// they all see the same values, so they all take the shared path, or all fall back to the message ring
// (a buffer shared on some ranks only, or at different offsets). While a control block exists every
// allreduce pays the entry barrier (~1 us), shared buffer or not: that is what makes the decision common.
// A rank publishes its next call's values only after the exit barrier (or after the ring, which no rank
// finishes before every rank has entered it), so nobody reads a slot being rewritten.
#include "comm/ring_communicator.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <exception>
#include <new>

#include <linux/futex.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "comm/reduce_kernels.h"
#include "common/error.h"
#include "common/log.h"

namespace dgr::comm::detail {
namespace {

constexpr int kTagRing = 1;       // allreduce and allgather units
constexpr int kTagBroadcast = 2;  // broadcast segments
constexpr size_t kMaxSegmentBytes = size_t{1} << 30;
// Shared path: bytes of a chunk reduced (and copied to the peers) at a time: in L2 between the two.
constexpr size_t kSharedBlockBytes = size_t{64} << 10;
// Shared path: spins on the counters before a wait goes to sleep on the slot's futex.
constexpr int kSharedSpins = 4000;
// Shared path: the longest sleep before the deadline is checked again (a lost wake-up costs at most this).
constexpr long kSharedSleepNs = 1'000'000;
constexpr uint64_t kNoRegion = ~uint64_t{0};

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Futexes on the control block, which is MAP_SHARED memory of several processes: the non-private
// operations, keyed by the physical page, so a wake in one process reaches a sleeper in another.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, long timeout_ns) {
  const struct timespec timeout{0, timeout_ns};
  // EAGAIN (the word changed already), EINTR and ETIMEDOUT all mean: look again.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &timeout, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

char* page_align(void* p) {
  return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(p) + 4095) / 4096 * 4096);
}

size_t round_to_page(size_t num_bytes) { return (std::max<size_t>(num_bytes, 1) + 4095) / 4096 * 4096; }

// Whether the file system holding Open MPI's shared-window backing files (osc_sm_backing_directory,
// /dev/shm by default) has `num_bytes` free. Open MPI 4.1 does not fail MPI_Win_allocate_shared cleanly
// when it has not: it warns, and the call then never returns on the other ranks. So the ring asks first.
bool backing_space_for(size_t num_bytes, std::string* where) {
  const char* dir = std::getenv("OMPI_MCA_osc_sm_backing_directory");
  *where = dir != nullptr && *dir != '\0' ? dir : "/dev/shm";
  struct statvfs st;
  if (statvfs(where->c_str(), &st) != 0) return true;  // not Open MPI's layout: let MPI try
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize >= num_bytes;
}

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

// One rank's slot of the control block: written by that rank only, read by every rank.
struct alignas(128) RingCommunicator::ControlSlot {
  std::atomic<uint64_t> counter{0};  // the last barrier target reached (release)
  std::atomic<uint32_t> wake{0};     // futex word: bumped after every counter store
  std::atomic<uint32_t> sleepers{0}; // ranks asleep (or about to be) on `wake`
  std::atomic<uint64_t> region{kNoRegion};  // the buffer published at entry: region id (kNoRegion: none),
  std::atomic<uint64_t> offset{0};          // byte offset in it,
  std::atomic<uint64_t> num_bytes{0};       // and size
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the shared control block needs lock-free atomics");
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex words are plain 32-bit integers");

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
  // Freeing the windows is collective; after a failure a peer may be gone or still reading: leak them.
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized || is_broken() || std::uncaught_exceptions() > 0) return;
  for (SharedRegion& region : regions_) MPI_Win_free(&region.win);
  if (control_win_ != MPI_WIN_NULL) MPI_Win_free(&control_win_);
  if (node_comm_ != MPI_COMM_NULL) MPI_Comm_free(&node_comm_);
}

bool RingCommunicator::every_rank(bool mine) {
  int value = mine ? 1 : 0;
  int all = 0;
  DGR_MPI_CHECK(MPI_Allreduce(&value, &all, 1, MPI_INT, MPI_MIN, comm_));
  return all != 0;
}

bool RingCommunicator::open_node_shared() {
  if (node_state_ != 0) return node_state_ > 0;
  node_state_ = -1;
  // key = rank: node ranks keep the order of comm_, so with one node node rank == rank.
  DGR_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm_));
  int node_size = 0;
  int node_rank = 0;
  DGR_MPI_CHECK(MPI_Comm_size(node_comm_, &node_size));
  DGR_MPI_CHECK(MPI_Comm_rank(node_comm_, &node_rank));
  if (node_size != size_) return false;  // the same on every rank: then no node has every rank
  DGR_CHECK_AS(CommError, node_rank == rank_, "node rank {} differs from rank {} with every rank on one node",
               node_rank, rank_);
  // Rank 0 holds every slot (one allocation); the others allocate nothing and map it. MPI may put a header
  // first, so the slots start at the first ControlSlot-aligned address: the same offset in every process,
  // since every process maps the segment page-aligned.
  void* base = nullptr;
  const size_t control_bytes = sizeof(ControlSlot) * static_cast<size_t>(size_);
  const MPI_Aint bytes = rank_ == 0 ? static_cast<MPI_Aint>(control_bytes + alignof(ControlSlot)) : 0;
  std::string where;
  if (!every_rank(backing_space_for(size_t{1} << 20, &where))) {  // see backing_space_for
    if (rank_ == 0) dgr::log::get("comm")->warn("ring: {} is full: buffers from allocate_shared are plain host memory and "
                                "allreduce on them uses messages", where);
    return false;
  }
  const int rc = MPI_Win_allocate_shared(bytes, 1, MPI_INFO_NULL, node_comm_, &base, &control_win_);
  const bool ok = rc == MPI_SUCCESS;
  if (!every_rank(ok)) {
    // Leaked where it was made: freeing it is collective over ranks that do not all have it.
    control_win_ = MPI_WIN_NULL;
    static std::atomic<bool> warned{false};  // once per process
    if (!warned.exchange(true)) dgr::log::get("comm")->warn("ring: MPI_Win_allocate_shared failed (e.g. osc rdma without osc sm): buffers "
                                "from allocate_shared are plain host memory and allreduce on them uses messages");
    return false;
  }
  MPI_Aint query_bytes = 0;
  int disp_unit = 0;
  void* segment = nullptr;
  DGR_MPI_CHECK(MPI_Win_shared_query(control_win_, 0, &query_bytes, &disp_unit, &segment));
  DGR_CHECK_AS(CommError, segment != nullptr && static_cast<size_t>(query_bytes) >= control_bytes + alignof(ControlSlot),
               "MPI_Win_shared_query gave {} bytes for the ring's control block, expected {}", query_bytes,
               control_bytes + alignof(ControlSlot));
  const uintptr_t address = reinterpret_cast<uintptr_t>(segment);
  void* slots = reinterpret_cast<void*>((address + alignof(ControlSlot) - 1) / alignof(ControlSlot) * alignof(ControlSlot));
  control_.resize(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) control_[static_cast<size_t>(r)] = static_cast<ControlSlot*>(slots) + r;
  new (control_[static_cast<size_t>(rank_)]) ControlSlot();  // each rank constructs its own slot
  DGR_MPI_CHECK(MPI_Barrier(node_comm_));                     // before anyone reads another's
  node_state_ = 1;
  static std::atomic<bool> told{false};  // once per process, not once per communicator
  if (rank_ == 0 && !told.exchange(true)) {
    dgr::log::get("comm")->info("ring: all {} ranks on one node: allreduce on buffers from allocate_shared goes "
                                "through shared memory", size_);
  }
  return true;
}

void* RingCommunicator::allocate_shared(size_t num_bytes) {
  if (size_ == 1 || !open_node_shared()) return Communicator::allocate_shared(num_bytes);
  DGR_CHECK_AS(CommError, !is_broken(), "ring communicator cannot allocate shared memory: an earlier collective "
               "failed");
  const size_t rounded = round_to_page(num_bytes);
  // Every rank's part, MPI's headers, and 1 MiB to spare; the same verdict on every rank.
  std::string where;
  if (!every_rank(backing_space_for((rounded + 8192) * static_cast<size_t>(size_) + (size_t{1} << 20), &where))) {
    if (rank_ == 0) dgr::log::get("comm")->warn("ring: not enough free space in {} for a shared window of {} x {} bytes; this "
                                "buffer is plain host memory and its allreduces use messages (make {} larger: "
                                "with Docker, --shm-size; or point Open MPI elsewhere: --mca "
                                "osc_sm_backing_directory /tmp)", where, size_, rounded, where);
    return Communicator::allocate_shared(num_bytes);
  }
  MPI_Info info = MPI_INFO_NULL;
  DGR_MPI_CHECK(MPI_Info_create(&info));
  DGR_MPI_CHECK(MPI_Info_set(info, "alloc_shared_noncontig", "true"));  // each rank's part page-aligned
  SharedRegion region;
  void* base = nullptr;
  // MPI may put a header before a rank's part: one page more, and the part starts at the first page
  // boundary (the same byte of the segment in every process, which all map it page-aligned).
  const int rc = MPI_Win_allocate_shared(static_cast<MPI_Aint>(rounded + 4096), 1, info, node_comm_, &base,
                                         &region.win);
  MPI_Info_free(&info);
  const bool ok = rc == MPI_SUCCESS;
  if (!every_rank(ok)) {
    // A container's small /dev/shm (Docker: 64 MiB) must not end the job: this allocation becomes plain
    // memory and its allreduces use messages (the window, where it was made, is leaked: freeing it is
    // collective over ranks that do not all have it).
    dgr::log::get("comm")->warn("ring: MPI_Win_allocate_shared of {} bytes failed on {}; this buffer is plain "
                                "host memory and its allreduces use messages (is /dev/shm full or too small? "
                                "see df /dev/shm; with Docker, --shm-size)", rounded, ok ? "another rank" : "this rank");
    return Communicator::allocate_shared(num_bytes);
  }
  region.id = next_region_id_++;
  region.num_bytes = rounded;
  region.bases.resize(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    MPI_Aint peer_bytes = 0;
    int disp_unit = 0;
    void* peer_base = nullptr;
    DGR_MPI_CHECK(MPI_Win_shared_query(region.win, r, &peer_bytes, &disp_unit, &peer_base));
    DGR_CHECK_AS(CommError, peer_base != nullptr && static_cast<size_t>(peer_bytes) >= rounded + 4096,
                 "MPI_Win_shared_query gave {} bytes for rank {}'s part of a shared allocation of {} bytes "
                 "(every rank must call allocate_shared with the same size)", peer_bytes, r, rounded + 4096);
    region.bases[static_cast<size_t>(r)] = page_align(peer_base);
  }
  region.base = region.bases[static_cast<size_t>(rank_)];
  DGR_CHECK_AS(CommError, region.base == page_align(base), "MPI_Win_shared_query maps this rank's own part of a "
               "shared allocation elsewhere than MPI_Win_allocate_shared returned");
  regions_.push_back(std::move(region));
  return regions_.back().base;
}

void RingCommunicator::free_shared(void* data) {
  if (data == nullptr) return;
  auto it = std::find_if(regions_.begin(), regions_.end(), [&](const SharedRegion& r) { return r.base == data; });
  if (it == regions_.end()) {
    Communicator::free_shared(data);
    return;
  }
  if (!is_broken()) MPI_Win_free(&it->win);  // collective; after a failure a peer may still read it: leaked
  regions_.erase(it);
}

const RingCommunicator::SharedRegion* RingCommunicator::find_region(const void* data, size_t num_bytes) const {
  const char* p = static_cast<const char*>(data);
  for (const SharedRegion& region : regions_) {
    if (p >= region.base && p <= region.base + region.num_bytes &&
        num_bytes <= static_cast<size_t>(region.base + region.num_bytes - p)) {
      return &region;
    }
  }
  return nullptr;
}

void RingCommunicator::shared_barrier(Call& call, uint64_t target) {
  ControlSlot& mine = *control_[static_cast<size_t>(rank_)];
  mine.counter.store(target, std::memory_order_seq_cst);
  mine.wake.fetch_add(1, std::memory_order_seq_cst);
  if (mine.sleepers.load(std::memory_order_seq_cst) != 0) futex_wake_all(&mine.wake);
  for (int r = 0; r < size_; ++r) {
    ControlSlot& slot = *control_[static_cast<size_t>(r)];
    for (int spins = 0; slot.counter.load(std::memory_order_acquire) < target; ++spins) {
      if (spins < kSharedSpins) {
        cpu_relax();
        if ((spins & 63) == 0) check_deadline(call);
        continue;
      }
      // Note [Sleeping waits]: asleep, not spinning or yielding. On 2 cores with 2 ranks, each with a
      // compute and a communication thread, a waiting thread that keeps running (even yielding) takes
      // CPU from the backward it waits for. Wake-up costs tens of microseconds, against steps of ~200 ms.
      slot.sleepers.fetch_add(1, std::memory_order_seq_cst);
      const uint32_t seen = slot.wake.load(std::memory_order_seq_cst);
      if (slot.counter.load(std::memory_order_seq_cst) < target) futex_wait(&slot.wake, seen, kSharedSleepNs);
      slot.sleepers.fetch_sub(1, std::memory_order_seq_cst);
      check_deadline(call);
    }
  }
}

bool RingCommunicator::shared_allreduce(Call& call, const Buffer& buffer, ReduceOp op) {
  const SharedRegion* region = find_region(buffer.data, buffer.num_bytes());
  const uint64_t epoch = ++shared_epoch_;
  ControlSlot& mine = *control_[static_cast<size_t>(rank_)];
  mine.region.store(region != nullptr ? region->id : kNoRegion, std::memory_order_relaxed);
  mine.offset.store(region != nullptr ? static_cast<uint64_t>(static_cast<char*>(buffer.data) - region->base) : 0,
                    std::memory_order_relaxed);
  mine.num_bytes.store(buffer.num_bytes(), std::memory_order_relaxed);
  shared_barrier(call, 2 * epoch - 1);  // entry: every slot now holds this call's values
  // The same predicate over the same values on every rank: all take the shared path or none does.
  const ControlSlot& first = *control_[0];
  const uint64_t region_id = first.region.load(std::memory_order_relaxed);
  const uint64_t offset = first.offset.load(std::memory_order_relaxed);
  bool same = region_id != kNoRegion;
  for (int r = 1; r < size_ && same; ++r) {
    const ControlSlot& slot = *control_[static_cast<size_t>(r)];
    same = slot.region.load(std::memory_order_relaxed) == region_id &&
           slot.offset.load(std::memory_order_relaxed) == offset &&
           slot.num_bytes.load(std::memory_order_relaxed) == first.num_bytes.load(std::memory_order_relaxed);
  }
  if (!same) return false;

  const size_t element_bytes = dtype_bytes(buffer.dtype);
  const ChunkLayout chunks{buffer.count, static_cast<size_t>(size_)};
  std::vector<char*> buffers(static_cast<size_t>(size_));  // [rank]: that rank's buffer, mapped here
  for (int r = 0; r < size_; ++r) buffers[static_cast<size_t>(r)] = region->bases[static_cast<size_t>(r)] + offset;
  char* own = buffers[static_cast<size_t>(rank_)];
  const size_t chunk_first = chunks.chunk_begin(rank_);
  const size_t chunk_count = chunks.chunk_count(rank_);
  const size_t block_count = std::max<size_t>(1, kSharedBlockBytes / element_bytes);
  const int divisor = op == ReduceOp::kAverage ? size_ : 1;
  for (size_t done = 0; done < chunk_count; done += block_count) {
    const size_t count = std::min(block_count, chunk_count - done);
    const size_t at = (chunk_first + done) * element_bytes;
    // The ring's order for chunk r: r's own values, then r+1, r+2, ... (see the essay).
    for (int k = 1; k < size_; ++k) {
      const char* peer = buffers[static_cast<size_t>(ring_mod(rank_ + k, size_))];
      reduce_into(own + at, peer + at, count, buffer.dtype, k == size_ - 1 ? divisor : 1);
    }
    for (int k = 1; k < size_; ++k) {
      std::memcpy(buffers[static_cast<size_t>(ring_mod(rank_ + k, size_))] + at, own + at, count * element_bytes);
    }
    check_deadline(call);
  }
  shared_barrier(call, 2 * epoch);  // exit: every chunk is in every buffer, and nobody reads any more
  return true;
}

void RingCommunicator::allreduce(Buffer buffer, ReduceOp op) {
  check_buffer(buffer, "the allreduce buffer");
  Call call = begin(OpKind::kAllreduce, buffer.dtype, buffer.num_bytes(), op == ReduceOp::kSum ? "sum" : "average");
  if (size_ == 1 || buffer.count == 0) {  // the identity, also for kAverage (a division by 1)
    call.done();
    return;
  }
  if (!control_.empty() && shared_allreduce(call, buffer, op)) {
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
  check_root(root, "broadcast");
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
