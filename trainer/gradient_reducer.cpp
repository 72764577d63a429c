// GradientReducer (see gradient_reducer.h).
//
// Note [Bucket order]: buckets are built once, from the parameters in reverse registration order, and
// are launched strictly in bucket-index order on every rank: a bucket whose parameters are all ready
// waits until every earlier bucket has been launched. The communication thread reduces them FIFO, so
// every rank issues the same collectives in the same order whatever order its gradients became ready in.
#include "trainer/gradient_reducer.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>

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
  for (auto& [name, p] : named_parameters) parameters_.push_back(Slot{p, 0, false});
  size_t cap = options_.first_bucket_bytes;
  std::vector<size_t> current;
  size_t current_bytes = 0;
  auto close_bucket = [&] {
    if (current.empty()) return;
    int64_t numel = 0;
    for (size_t i : current) numel += parameters_[i].parameter.numel();
    Bucket bucket;
    bucket.flat = torch::zeros({numel}, parameters_[current.front()].parameter.options().requires_grad(false));
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
  for (size_t k = 0; k < parameters_.size(); ++k) {
    auto accumulator = torch::autograd::impl::grad_accumulator(parameters_[k].parameter);
    DGR_CHECK_AS(ConfigError, accumulator != nullptr, "gradient reducer: parameter {} does not require grad", k);
    accumulator->add_post_hook(std::make_unique<ReadyHook>(this, k));
    accumulators_.push_back(std::move(accumulator));
  }
  thread_ = std::thread([this] { communication_loop(); });
  log::get("trainer")->debug("gradient reducer: {} parameters in {} buckets on {}{}", parameters_.size(),
                              buckets_.size(), device_.str(), staged_ ? ", staged through host memory" : "");
}

GradientReducer::~GradientReducer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
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
  for (auto& bucket : buckets_) {
    bucket.num_pending = bucket.parameters.size();
    bucket.launched = false;
  }
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
  Bucket& bucket = buckets_[slot.bucket];
  if (--bucket.num_pending == 0) launch_ready_buckets_in_order();
}

void GradientReducer::launch_ready_buckets_in_order() {
  std::vector<size_t> to_launch;
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_].num_pending == 0) {
    buckets_[next_to_launch_].launched = true;
    to_launch.push_back(next_to_launch_++);
  }
  if (to_launch.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t b : to_launch) queue_.push_back(b);
  }
  work_cv_.notify_one();
}

void GradientReducer::communication_loop() {
  while (true) {
    size_t b;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty()) return;
      b = queue_.front();
      queue_.pop_front();
    }
    auto start = Clock::now();
    std::exception_ptr error;
    try {
      torch::Tensor& flat = buckets_[b].flat;
      if (staged_) {
        // Through the pinned host copy; copy_ waits for the backward kernels that wrote the bucket (same
        // stream) and for its own transfer, so the allreduce reads and the optimizer sees final values.
        torch::Tensor& host = buckets_[b].host;
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
  // Parameters that got no gradient in this window: their zeros are reduced in the usual bucket order.
  for (auto& bucket : buckets_) bucket.num_pending = 0;
  launch_ready_buckets_in_order();
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return completed_ == buckets_.size(); });
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
