// The LibTorch side of trainer/device.h: the torch::Device of a DeviceChoice, moving CPU-built tensors to
// it, and the bf16 autocast scope of `--precision bf16`.
#pragma once

#include <torch/torch.h>

#include "trainer/device.h"

namespace dgr::trainer {

torch::Device torch_device(const DeviceChoice& device);
DeviceChoice device_choice(const torch::Device& device);

// `t` on `device`: itself when it is there already (the CPU path copies nothing), else a copy, queued
// without waiting (non_blocking) when `t` is in pinned host memory.
torch::Tensor to_device(const torch::Tensor& t, const torch::Device& device);

// While it lives, CUDA ops of this thread run under autocast to bfloat16 (LibTorch's at::autocast), when
// `enabled`; a no-op otherwise. For forward passes and losses only: end it before backward(). The cast
// weights are cached for the scope's lifetime and dropped when the outermost scope ends.
class AutocastScope {
 public:
  explicit AutocastScope(bool enabled);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_ = false;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kHalf;
};

}  // namespace dgr::trainer
