// GradientReducer (see gradient_reducer.h).
//
// Note [Bucket order]: buckets are built once, from the parameters in reverse registration order, and
// their pieces are launched strictly in piece-index order on every rank: a piece whose parameters are all
// ready waits until every earlier piece has been launched. The communication thread reduces them FIFO, so
// every rank issues the same collectives in the same order whatever order its gradients became ready in.
//
// Note [Pieces]: a bucket is the unit of memory (one flat tensor the gradients are views into); a piece,
// a contiguous range of at most piece_bytes of it, is the unit of communication. A bucket's parameters
// are laid out in the order backward is expected to produce them, so the first pieces of a large bucket
// are complete long before its last parameter is: each goes out as soon as the parameters it overlaps
// are ready, instead of the whole bucket waiting for its last gradient. With DDP's default buckets (1 MiB,
// then 25 MiB) a model of 23 MB has all but 1 MiB in one bucket, which could only start once backward
// was over; in 4 MiB pieces most of it is reduced while backward still runs (docs/benchmarks.md). A piece
// is a whole number of ring segments for the usual sizes, so the ring's pipelining is kept.
// Pieces pay off when the reduction has its own hardware (NCCL on the GPU). When the ring or mpi backend
// reduces on the CPU, the communication thread needs a core that the trainer already gave to compute
// (threads per rank = cores / ranks): on the 2-core reference machine 4 MiB pieces took exposed
// communication from ~50% to 0% but made the 2-rank step 5-25% slower, since backward then shares its core
// with the reduction. So by default (kAutoPieces) pieces are on with nccl only; --piece-mib sets them.
//
// Note [Shared buckets]: buckets of CPU parameters live in memory from comm.allocate_shared (collective:
// every rank builds the same buckets in the same order, checked by the signatures). With the ring backend
// and every rank on one node that is an MPI shared window, and the ring reduces a bucket by reading its
// peers' buckets directly instead of sending messages (comm/ring_communicator.cpp, "The shared-memory
// path"): no kernel copy, about a memcpy's memory traffic, so the reduction costs the core that backward
// shares with it much less. Elsewhere it is plain host memory. The gradients outlive the reducer (they
// belong to the parameters), the memory may not: the destructor gives every parameter a private copy of
// its gradient, then frees the buckets (collectively, so not while an exception unwinds: then the
// communicator's destruction frees them, or they are leaked).
#include "trainer/gradient_reducer.h"

#include <future>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <cstring>
#include <exception>

#include "common/error.h"
#include "common/log.h"
#include "trainer/placement.h"

namespace dgr::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

comm::DType to_comm_dtype(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return comm::DType::kFloat32;
    case torch::kBFloat16: return comm::DType::kBFloat16;
    case torch::kInt32: return comm::DType::kInt32;
    case torch::kInt64: return comm::DType::kInt64;
    default: throw ConfigError(fmt::format("gradient reducer: parameters of dtype {} are not supported "
                                           "(use float32 or bfloat16)", c10::toString(type)));
  }
}

comm::Buffer buffer_of(const torch::Tensor& t) {
  return comm::Buffer{t.data_ptr(), static_cast<size_t>(t.numel()), to_comm_dtype(t.scalar_type()),
                      t.is_cuda() ? comm::Device::kCuda : comm::Device::kCpu};
}

uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) { h ^= c; h *= 1099511628211ull; }
  return h;
}

}  // namespace

ReducerOptions reducer_options_from_mib(double bucket_mib, double piece_mib) {
  DGR_CHECK_AS(ConfigError, bucket_mib > 0, "--bucket-mib must be positive (got {})", bucket_mib);
  ReducerOptions options;
  options.bucket_bytes = static_cast<size_t>(bucket_mib * (1 << 20));
  if (piece_mib >= 0) options.piece_bytes = static_cast<size_t>(piece_mib * (1 << 20));
  return options;
}

// Runs after a parameter's AccumulateGrad node: its gradient for this backward is now in the bucket.
class GradientReducer::ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(GradientReducer* reducer, size_t parameter) : reducer_(reducer), parameter_(parameter) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    reducer_->mark_ready(parameter_);
    return outputs;
  }

 private:
  GradientReducer* reducer_;
  size_t parameter_;
};

GradientReducer::GradientReducer(std::vector<std::pair<std::string, torch::Tensor>> named_parameters,
                                 comm::Communicator& communicator, ReducerOptions options)
    : comm_(communicator), options_(options) {
  DGR_CHECK_AS(ConfigError, !named_parameters.empty(), "gradient reducer: the model has no parameters");
  device_ = named_parameters.front().second.device();
  for (auto& [name, p] : named_parameters) {
    DGR_CHECK_AS(ConfigError, p.device() == device_, "gradient reducer: parameter '{}' is on {} but '{}' is on {} "
                 "(move the whole model to one device)", name, p.device().str(), named_parameters.front().first,
                 device_.str());
  }
  staged_ = !comm_.accepts(device_.is_cuda() ? comm::Device::kCuda : comm::Device::kCpu);
  DGR_CHECK_AS(ConfigError, !staged_ || device_.is_cuda(),
               "gradient reducer: the {} backend takes GPU buffers only but the parameters are on the CPU (use the "
               "ring or mpi backend, or put the model on a GPU)", comm_.name());
  check_signatures(named_parameters);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : named_parameters) {
      DGR_CHECK_AS(ConfigError, p.is_contiguous(), "gradient reducer: parameter '{}' is not contiguous", name);
      if (staged_) {
        torch::Tensor host = p.to(torch::kCPU);
        comm_.broadcast(buffer_of(host), 0);
        p.copy_(host);
      } else {
        comm_.broadcast(buffer_of(p), 0);
      }
    }
  }
  // Buckets in reverse registration order, split by dtype and by size cap.
  for (auto& [name, p] : named_parameters) parameters_.push_back(Slot{p, 0, {}, false});
  size_t cap = options_.first_bucket_bytes;
  std::vector<size_t> current;
  size_t current_bytes = 0;
  auto close_bucket = [&] {
    if (current.empty()) return;
    int64_t numel = 0;
    for (size_t i : current) numel += parameters_[i].parameter.numel();
    Bucket bucket;
    const auto options = parameters_[current.front()].parameter.options().requires_grad(false);
    if (!device_.is_cuda()) {  // Note [Shared buckets] (staged buckets are GPU buckets)
      const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(options.dtype().toScalarType());
      bucket.shared = comm_.allocate_shared(bytes);
      std::memset(bucket.shared, 0, bytes);
      bucket.flat = torch::from_blob(bucket.shared, {numel}, options);
    } else {
      bucket.flat = torch::zeros({numel}, options);
    }
    if (staged_) {
      bucket.host = torch::empty({numel}, torch::TensorOptions(wire_dtype(bucket.flat.scalar_type())).pinned_memory(true));
    }
    int64_t offset = 0;
    for (size_t i : current) {
      torch::Tensor& p = parameters_[i].parameter;
      p.mutable_grad() = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      parameters_[i].bucket = buckets_.size();
    }
    bucket.parameters = current;
    buckets_.push_back(std::move(bucket));
    current.clear();
    current_bytes = 0;
    cap = options_.bucket_bytes;
  };
  for (size_t k = parameters_.size(); k-- > 0;) {
    const torch::Tensor& p = parameters_[k].parameter;
    size_t bytes = static_cast<size_t>(p.numel()) * p.element_size();
    if (!current.empty() && (parameters_[current.front()].parameter.scalar_type() != p.scalar_type() ||
                             current_bytes + bytes > cap)) {
      close_bucket();
    }
    current.push_back(k);
    current_bytes += bytes;
  }
  close_bucket();
  // Pieces: each bucket cut into ceil(bytes / piece_bytes) ranges of (nearly) equal size.
  if (options_.piece_bytes == ReducerOptions::kAutoPieces) {
    options_.piece_bytes = device_.is_cuda() && !staged_ ? size_t{4} << 20 : 0;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const int64_t numel = buckets_[b].flat.numel();
    const int64_t bytes = numel * buckets_[b].flat.element_size();
    int64_t count = options_.piece_bytes == 0
                        ? 1 : std::max<int64_t>(1, (bytes + static_cast<int64_t>(options_.piece_bytes) - 1) /
                                                       static_cast<int64_t>(options_.piece_bytes));
    count = std::min(count, std::max<int64_t>(1, numel));
    const size_t first_piece = pieces_.size();
    for (int64_t i = 0; i < count; ++i) {
      const int64_t begin = numel * i / count, end = numel * (i + 1) / count;
      pieces_.push_back(Piece{b, begin, end - begin, 0, 0});
    }
    int64_t offset = 0;
    for (size_t k : buckets_[b].parameters) {
      const int64_t begin = offset, end = offset + parameters_[k].parameter.numel();
      offset = end;
      for (size_t q = first_piece; q < pieces_.size(); ++q) {
        const Piece& piece = pieces_[q];
        if (begin < piece.offset + piece.numel && piece.offset < end) {
          parameters_[k].pieces.push_back(q);
          ++pieces_[q].num_parameters;
        }
      }
    }
  }
  for (size_t k = 0; k < parameters_.size(); ++k) {  // checked before the thread starts: a throw here is clean
    auto accumulator = torch::autograd::impl::grad_accumulator(parameters_[k].parameter);
    DGR_CHECK_AS(ConfigError, accumulator != nullptr, "gradient reducer: parameter {} does not require grad", k);
    accumulators_.push_back(std::move(accumulator));
  }
  // The thread's device step runs before the constructor returns (its failure is this constructor's, before any
  // hook points at this reducer).
  std::promise<void> started;
  std::future<void> ready = started.get_future();
  thread_ = std::thread([this, &started] {
    try {
      if (options_.on_thread_start) {
        options_.on_thread_start();
      } else if (device_.is_cuda()) {
        c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->setDevice(device_);
      }
      started.set_value();
    } catch (...) {
      started.set_exception(std::current_exception());
      return;
    }
    communication_loop();
  });
  try {
    ready.get();
  } catch (...) {
    thread_.join();
    throw;
  }
  for (size_t k = 0; k < parameters_.size(); ++k) {
    accumulators_[k]->add_post_hook(std::make_unique<ReadyHook>(this, k));
  }

  log::get("trainer")->debug("gradient reducer: {} parameters in {} buckets, {} pieces, on {}{}", parameters_.size(),
                              buckets_.size(), pieces_.size(), device_.str(),
                              staged_ ? ", staged through host memory" : "");
}

GradientReducer::~GradientReducer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Note [Shared buckets]: the parameters keep their gradients, in memory of their own.
  torch::NoGradGuard no_grad;
  for (Bucket& bucket : buckets_) {
    if (bucket.shared == nullptr) continue;
    for (size_t k : bucket.parameters) {
      torch::Tensor& p = parameters_[k].parameter;
      if (p.grad().defined()) p.mutable_grad() = p.grad().clone();
    }
  }
  if (std::uncaught_exceptions() > 0) return;
  for (Bucket& bucket : buckets_) {
    if (bucket.shared == nullptr) continue;
    bucket.flat = torch::Tensor();
    comm_.free_shared(bucket.shared);
    bucket.shared = nullptr;
  }
}

size_t GradientReducer::bucket_bytes(size_t bucket) const {
  return static_cast<size_t>(buckets_.at(bucket).flat.numel()) * buckets_.at(bucket).flat.element_size();
}

torch::ScalarType GradientReducer::wire_dtype(torch::ScalarType dtype) const {
  return dtype == torch::kBFloat16 && !options_.bf16_on_wire ? torch::kFloat32 : dtype;
}

void GradientReducer::check_signatures(const std::vector<std::pair<std::string, torch::Tensor>>& named) {
  uint64_t hash = 1469598103934665603ull;
  for (const auto& [name, p] : named) {
    hash = fnv1a(name + ":" + c10::toString(p.scalar_type()) + ":" + c10::str(p.sizes()) + ";", hash);
  }
  const int world_size = comm_.size();
  std::vector<int64_t> all(world_size);
  int64_t mine = static_cast<int64_t>(hash);
  allgather_host(comm_, comm::Buffer{&mine, 1, comm::DType::kInt64},
                 comm::Buffer{all.data(), all.size(), comm::DType::kInt64}, device_choice(device_));
  std::string differ;
  for (int r = 0; r < world_size; ++r) {
    if (all[r] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  }
  DGR_CHECK_AS(ConfigError, differ.empty(),
               "the model differs between ranks: parameter names, shapes or dtypes of rank(s) {} do not match "
               "rank 0's (every rank must build the same model from the same config)", differ);
}

void GradientReducer::zero_grad() {
  for (auto& bucket : buckets_) bucket.flat.zero_();
}

void GradientReducer::prepare_backward(bool synchronize) {
  // Note [Bucket views]: something outside the reducer (optimizer.zero_grad(), user code) may have reset or
  // replaced a .grad; put the bucket view back (keeping its value) so the allreduce sees every gradient.
  for (size_t b = 0; b < buckets_.size(); ++b) {
    int64_t offset = 0;
    for (size_t k : buckets_[b].parameters) {
      torch::Tensor& p = parameters_[k].parameter;
      torch::Tensor view = buckets_[b].flat.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
      const torch::Tensor& grad = p.grad();
      if (grad.defined() && grad.data_ptr() == view.data_ptr()) continue;
      torch::NoGradGuard no_grad;
      if (grad.defined()) view.copy_(grad);
      else view.zero_();
      p.mutable_grad() = view;
    }
  }
  synchronize_ = synchronize;
  in_backward_ = true;
  for (auto& slot : parameters_) slot.ready = false;
  for (auto& piece : pieces_) piece.num_pending = piece.num_parameters;
  next_to_launch_ = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    completed_ = 0;
    comm_ms_accumulated_ = 0;
  }
  backward_start_ = Clock::now();
}

void GradientReducer::mark_ready(size_t parameter) {
  if (!in_backward_ || !synchronize_) return;
  Slot& slot = parameters_[parameter];
  if (slot.ready) return;  // a parameter reached twice in one backward counts once
  slot.ready = true;
  bool complete = false;
  for (size_t q : slot.pieces) complete = --pieces_[q].num_pending == 0 || complete;
  if (complete) launch_ready_pieces_in_order();
}

void GradientReducer::launch_ready_pieces_in_order() {
  std::vector<size_t> to_launch;
  while (next_to_launch_ < pieces_.size() && pieces_[next_to_launch_].num_pending == 0) {
    to_launch.push_back(next_to_launch_++);
  }
  if (to_launch.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t q : to_launch) queue_.push_back(q);
  }
  work_cv_.notify_one();
}

// Note [Communication thread's device]: a new thread's current CUDA device is 0 whatever its rank's is, so
// before the first collective the thread (started in the constructor) makes the parameters' device current (issue 22, review item 3:
// otherwise every rank's collectives and the NCCL communicator's device guard, restoring "the caller's"
// device 0, create a context on GPU 0 from every rank: ~0.5 GB each, and an error on GPUs in
// exclusive-process mode).
void GradientReducer::communication_loop() {
  while (true) {
    size_t q;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty()) return;
      q = queue_.front();
      queue_.pop_front();
    }
    const Piece& piece = pieces_[q];
    auto start = Clock::now();
    std::exception_ptr error;
    try {
      torch::Tensor flat = buckets_[piece.bucket].flat.narrow(0, piece.offset, piece.numel);
      if (staged_) {
        // Through the pinned host copy; copy_ waits for the backward kernels that wrote the bucket (same
        // stream) and for its own transfer, so the allreduce reads and the optimizer sees final values.
        torch::Tensor host = buckets_[piece.bucket].host.narrow(0, piece.offset, piece.numel);
        host.copy_(flat);
        comm_.allreduce(buffer_of(host), comm::ReduceOp::kAverage);
        flat.copy_(host);
      } else if (flat.scalar_type() == torch::kBFloat16 && !options_.bf16_on_wire) {
        torch::Tensor wide = flat.to(torch::kFloat32);
        comm_.allreduce(buffer_of(wide), comm::ReduceOp::kAverage);
        flat.copy_(wide);
      } else {
        comm_.allreduce(buffer_of(flat), comm::ReduceOp::kAverage);
      }
    } catch (...) {
      error = std::current_exception();
    }
    auto end = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (error && !error_) error_ = error;
      comm_ms_accumulated_ += ms_between(start, end);
      last_comm_end_ = end;
      ++completed_;
    }
    done_cv_.notify_all();
  }
}

void GradientReducer::finish_backward() {
  backward_end_ = Clock::now();
  in_backward_ = false;
  if (!synchronize_) {
    timers_.backward_ms = ms_between(backward_start_, backward_end_);
    return;
  }
  // Parameters that got no gradient in this window: their zeros are reduced in the usual piece order.
  for (auto& piece : pieces_) piece.num_pending = 0;
  launch_ready_pieces_in_order();
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return completed_ == pieces_.size(); });
  if (error_) {
    std::exception_ptr error = error_;
    error_ = nullptr;
    std::rethrow_exception(error);
  }
  timers_.backward_ms = ms_between(backward_start_, backward_end_);
  timers_.communication_ms = comm_ms_accumulated_;
  timers_.exposed_ms = std::max(0.0, ms_between(backward_end_, last_comm_end_));
}

}  // namespace dgr::trainer
