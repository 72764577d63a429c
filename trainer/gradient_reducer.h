// GradientReducer: DDP-style data-parallel gradient synchronisation for any LibTorch module. Gradients
// live as views into flat buckets; a hook per parameter marks it ready during backward, and a full
// bucket's allreduce starts at once on a communication thread while backward goes on. Buckets live on the
// parameters' device; when the communicator does not take buffers there (GPU parameters with the ring or
// mpi backend, which reduce host memory), each bucket is staged through a pinned host copy: copy to the
// host, allreduce, copy back.
#pragma once

#include <torch/torch.h>

#include "trainer/torch_compat.h"

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"

namespace dgr::trainer {

struct ReducerOptions {
  size_t first_bucket_bytes = 1 << 20;  // the first bucket (reduced first) is small so comm starts early
  size_t bucket_bytes = 25 << 20;       // cap of every later bucket
  // A bucket's allreduce goes out in pieces of at most this many bytes, each as soon as the parameters it
  // covers are ready (Note [Pieces]); 0 = one allreduce per bucket, once all of it is ready. kAutoPieces:
  // 4 MiB pieces when the communicator reduces device memory itself (nccl: the GPU reduces while backward
  // runs), whole buckets when the reduction runs on this rank's CPU cores (ring, mpi), which the trainer
  // already gives to compute (threads per rank = cores / ranks): there, overlapping steals compute time.
  static constexpr size_t kAutoPieces = SIZE_MAX;
  size_t piece_bytes = kAutoPieces;
  bool bf16_on_wire = false;            // bf16 parameters: reduce in bf16 (else converted to fp32 first)
  // Runs first on the communication thread, before any bucket is reduced (Note [Communication thread's
  // device]); unset = make the parameters' CUDA device current there (nothing on the CPU). Tests observe it.
  std::function<void()> on_thread_start;
};

// The options of `dgr train --bucket-mib B --piece-mib P` (P < 0: kAutoPieces).
ReducerOptions reducer_options_from_mib(double bucket_mib, double piece_mib);

// Times of the last synchronised step, in milliseconds.
struct ReducerTimers {
  double backward_ms = 0;        // prepare_backward() -> finish_backward() (the caller's backward pass)
  double communication_ms = 0;   // sum of the bucket allreduces
  double exposed_ms = 0;         // communication still running after backward ended
};

class GradientReducer {
 public:
  // Collective. Buckets the parameters (in reverse registration order: roughly the order in which
  // backward produces their gradients), checks that every rank has the same parameter names, shapes and
  // dtypes (ConfigError naming the ranks otherwise), broadcasts the values from rank 0, and makes every
  // .grad a zeroed view into its bucket. Every parameter must be on the same device. `communicator` must
  // outlive the reducer.
  GradientReducer(std::vector<std::pair<std::string, torch::Tensor>> named_parameters,
                  comm::Communicator& communicator, ReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Zeroes every gradient. Use this, not optimizer.zero_grad(): LibTorch 1.13's calls detach_() on each
  // .grad, which throws on the bucket views. Gradients dropped or replaced by other code are put back into
  // their buckets by prepare_backward() (Note [Bucket views]).
  void zero_grad();

  // Call right before loss.backward(). `synchronize` = false for the micro-steps of gradient
  // accumulation that must not communicate; the last micro-step passes true. Every rank passes the same.
  void prepare_backward(bool synchronize);

  // Call right after loss.backward(). On a synchronising step: launches the pieces that are not yet
  // launched (parameters that got no gradient in the window contribute zeros; bucket order unchanged),
  // waits for every allreduce, and leaves the averaged gradients in .grad. Collective.
  void finish_backward();

  const ReducerTimers& timers() const { return timers_; }
  size_t num_buckets() const { return buckets_.size(); }
  size_t num_pieces() const { return pieces_.size(); }  // allreduces per synchronised step
  size_t bucket_bytes(size_t bucket) const;
  // True when buckets travel through host memory (see the class comment).
  bool staged() const { return staged_; }

 private:
  struct Bucket {
    torch::Tensor flat;                 // [numel] contiguous, dtype and device of its parameters
    torch::Tensor host;                 // [numel] pinned host copy of what goes on the wire, when staged_
    void* shared = nullptr;             // CPU buckets: flat's memory, from comm.allocate_shared
    std::vector<size_t> parameters;     // [slot] indices into parameters_
  };
  // A contiguous range of one bucket, reduced by one allreduce (Note [Pieces]).
  struct Piece {
    size_t bucket = 0;
    int64_t offset = 0;                 // elements into the bucket's flat tensor
    int64_t numel = 0;
    size_t num_parameters = 0;          // parameters overlapping the range
    size_t num_pending = 0;             // of those, not yet ready in this backward
  };
  struct Slot {
    torch::Tensor parameter;
    size_t bucket = 0;
    std::vector<size_t> pieces;         // pieces overlapping this parameter's gradient
    bool ready = false;
  };
  class ReadyHook;

  void mark_ready(size_t parameter);
  void launch_ready_pieces_in_order();
  void communication_loop();
  void check_signatures(const std::vector<std::pair<std::string, torch::Tensor>>& named);
  torch::ScalarType wire_dtype(torch::ScalarType dtype) const;

  torch::Device device_ = torch::kCPU;                     // of every parameter and bucket
  bool staged_ = false;                                    // the communicator does not take device_ buffers

  comm::Communicator& comm_;
  ReducerOptions options_;
  std::vector<Slot> parameters_;                           // [parameter], registration order
  std::vector<Bucket> buckets_;                            // [bucket], reduction order
  std::vector<Piece> pieces_;                              // [piece], launch order (bucket, then offset)
  std::vector<compat::GradAccumulator> accumulators_;  // keeps the hooked nodes alive
  size_t next_to_launch_ = 0;                              // pieces launch strictly in index order
  bool synchronize_ = true;
  bool in_backward_ = false;

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<size_t> queue_;                               // [launch order] piece indices
  size_t completed_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::chrono::steady_clock::time_point backward_start_, backward_end_, last_comm_end_;
  double comm_ms_accumulated_ = 0;
  ReducerTimers timers_;
};

}  // namespace dgr::trainer
