// The few interfaces in which LibTorch 1.13 (Debian's) and LibTorch 2.x differ for dgr, resolved once here so
// that the rest of trainer/ builds against either (issue 22; scripts/libtorch2-check.sh builds and tests
// against a PyPI torch wheel's LibTorch). TORCH_VERSION_MAJOR comes from torch/version.h.
#pragma once

#include <torch/csrc/autograd/variable.h>
#include <torch/optim/optimizer.h>
#include <torch/version.h>

#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace dgr::trainer::compat {

// Optimizer state is keyed by the parameter's TensorImpl: 1.13 by its address printed as a string
// (c10::guts::to_string, gone in 2.x), 2.x by the address itself.
using OptimizerStateKey = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

template <typename Key = OptimizerStateKey>
Key optimizer_state_key(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;  // what c10::guts::to_string wrote
    text << p.unsafeGetTensorImpl();
    return text.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

// A parameter's gradient accumulator node: a shared_ptr in 1.13, an intrusive_ptr in 2.x.
using GradAccumulator = decltype(torch::autograd::impl::grad_accumulator(std::declval<const torch::Tensor&>()));

}  // namespace dgr::trainer::compat

// c10::Allocator: allocate() is const in 1.13 and not in 2.x, which also requires copy_data(). Declare
// `c10::DataPtr allocate(size_t n) DGR_ALLOCATE_CONST override` and add DGR_ALLOCATOR_COPY_DATA to the class.
#if TORCH_VERSION_MAJOR >= 2
#define DGR_ALLOCATE_CONST
#define DGR_ALLOCATOR_COPY_DATA                                                      \
  void copy_data(void* dest, const void* src, std::size_t count) const override {     \
    default_copy_data(dest, src, count);                                              \
  }
#else
#define DGR_ALLOCATE_CONST const
#define DGR_ALLOCATOR_COPY_DATA
#endif
