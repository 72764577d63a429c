// Device choice, precision checks and host-memory collectives (see device.h), and the LibTorch helpers
// of placement.h.
#include "trainer/device.h"

#include <ATen/autocast_mode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>

#include "common/error.h"
#include "trainer/placement.h"

namespace dgr::trainer {
namespace {

torch::ScalarType torch_dtype(comm::DType dtype) {
  switch (dtype) {
    case comm::DType::kFloat32: return torch::kFloat32;
    case comm::DType::kBFloat16: return torch::kBFloat16;
    case comm::DType::kInt32: return torch::kInt32;
    case comm::DType::kInt64: return torch::kInt64;
  }
  throw ConfigError(fmt::format("unknown comm dtype {}", static_cast<int>(dtype)));
}

// `buffer` (host memory) as a tensor on `device`, for a communicator that takes device memory only.
torch::Tensor staged(const comm::Buffer& buffer, const DeviceChoice& device, const char* collective) {
  DGR_CHECK_AS(ConfigError, device.cuda,
               "{}: the communicator takes GPU buffers only but the model is on the CPU (use --comm ring or mpi "
               "with --device cpu)", collective);
  return torch::from_blob(buffer.data, {static_cast<int64_t>(buffer.count)}, torch_dtype(buffer.dtype))
      .to(torch_device(device));
}

comm::Buffer buffer_of(const torch::Tensor& t, comm::DType dtype) {
  return comm::Buffer{t.data_ptr(), static_cast<size_t>(t.numel()), dtype,
                      t.is_cuda() ? comm::Device::kCuda : comm::Device::kCpu};
}

void copy_back(const torch::Tensor& from, const comm::Buffer& to) {
  torch::from_blob(to.data, {static_cast<int64_t>(to.count)}, torch_dtype(to.dtype)).copy_(from);
}

}  // namespace

std::string DeviceChoice::str() const { return cuda ? fmt::format("cuda:{}", index) : std::string("cpu"); }

DeviceChoice resolve_device(const std::string& requested, const World& world) {
  DGR_CHECK_AS(ConfigError, requested == "auto" || requested == "cpu" || requested == "cuda",
               "unknown device '{}' (use auto, cpu or cuda)", requested);
  if (requested == "cpu") return {};
  const int gpus = static_cast<int>(torch::cuda::device_count());
  if (requested == "auto" && gpus == 0) return {};
  DGR_CHECK_AS(ConfigError, gpus > 0,
               "--device cuda: rank {} (local rank {} on {}) sees no CUDA GPU ({}); run on a GPU node, or use "
               "--device cpu", world.rank(), world.local_rank(), world.host(),
               at::hasCUDA() ? "LibTorch found 0 GPUs: check CUDA_VISIBLE_DEVICES and the driver"
                             : "this dgr is linked against a LibTorch without CUDA: rebuild it with "
                               "-DTorch_DIR=<a CUDA LibTorch>/share/cmake/Torch");
  DGR_CHECK_AS(ConfigError, world.local_size() <= gpus && world.local_rank() < gpus,
               "--device {}: rank {} (local rank {} of {} ranks on {}) has no GPU of its own: {} sees {} CUDA "
               "GPU(s) for {} ranks. Start one rank per GPU (every rank must see all GPUs of its node: "
               "--gpus-per-node, not --gpus-per-task), or use --device cpu",
               requested, world.rank(), world.local_rank(), world.local_size(), world.host(), world.host(), gpus,
               world.local_size());
  return DeviceChoice{true, world.local_rank()};
}

void check_precision(const std::string& precision, const DeviceChoice& device) {
  DGR_CHECK_AS(ConfigError, precision == "fp32" || precision == "bf16", "unknown precision '{}' (use fp32 or bf16)",
               precision);
  DGR_CHECK_AS(ConfigError, precision == "fp32" || device.cuda,
               "--precision bf16: bf16 autocast needs --device cuda (the device of this run is {}); use "
               "--precision fp32 on CPUs", device.str());
}

void check_backend(const std::string& backend, const DeviceChoice& device) {
  DGR_CHECK_AS(ConfigError, backend != "nccl" || device.cuda,
               "--comm nccl reduces GPU buffers but the model is on the CPU (--device {}): use --comm ring or mpi "
               "on CPUs, or --device cuda", device.str());
}

void make_current(const DeviceChoice& device) {
  if (!device.cuda) return;
  c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->setDevice(torch_device(device));
}

DeviceChoice prepare_training_device(const std::string& requested, const std::string& precision,
                                     const std::string& backend, const World& world) {
  const DeviceChoice device = resolve_device(requested, world);
  check_precision(precision, device);
  check_backend(backend, device);
  make_current(device);
  return device;
}

void allreduce_host(comm::Communicator& communicator, comm::Buffer buffer, comm::ReduceOp op,
                    const DeviceChoice& device) {
  if (communicator.accepts(buffer.device)) {
    communicator.allreduce(buffer, op);
    return;
  }
  torch::Tensor t = staged(buffer, device, "allreduce");
  communicator.allreduce(buffer_of(t, buffer.dtype), op);
  copy_back(t, buffer);
}

void allgather_host(comm::Communicator& communicator, comm::Buffer send, comm::Buffer recv,
                    const DeviceChoice& device) {
  if (communicator.accepts(send.device) && communicator.accepts(recv.device)) {
    communicator.allgather(send, recv);
    return;
  }
  torch::Tensor s = staged(send, device, "allgather");
  torch::Tensor r = torch::empty({static_cast<int64_t>(recv.count)}, s.options().dtype(torch_dtype(recv.dtype)));
  communicator.allgather(buffer_of(s, send.dtype), buffer_of(r, recv.dtype));
  copy_back(r, recv);
}

// ---------------------------------------------------------------------------------------------------
// placement.h

torch::Device torch_device(const DeviceChoice& device) {
  return device.cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device.index))
                     : torch::Device(torch::kCPU);
}

DeviceChoice device_choice(const torch::Device& device) {
  return device.is_cuda() ? DeviceChoice{true, device.has_index() ? device.index() : 0} : DeviceChoice{};
}

torch::Tensor to_device(const torch::Tensor& t, const torch::Device& device) {
  if (t.device() == device) return t;
  return t.to(device, /*non_blocking=*/t.is_pinned());
}

AutocastScope::AutocastScope(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
  previous_enabled_ = at::autocast::is_enabled();
  previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
  at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  at::autocast::set_enabled(true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_enabled(previous_enabled_);
  at::autocast::set_autocast_gpu_dtype(previous_dtype_);
}

}  // namespace dgr::trainer
