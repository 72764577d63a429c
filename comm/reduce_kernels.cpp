// Reduction kernels: one flat loop per (dtype, divide or not) over __restrict pointers so GCC vectorises
// each of them at -O3 (`#pragma GCC ivdep`: no loop-carried dependence through memory). They run on the
// segments the ring has just received, which are still in cache, so they are cheap next to the transfer.
#include "comm/reduce_kernels.h"

#include "common/error.h"

// Each entry point is also compiled for AVX2 and picked at load time (GCC function multi-versioning): the
// loops below are inlined into each clone and vectorised with its instruction set.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DGR_KERNEL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DGR_KERNEL_CLONES
#endif

namespace dgr::comm::detail {
namespace {

template <typename T>
void add(T* __restrict dst, const T* __restrict src, size_t count) {
#pragma GCC ivdep
  for (size_t i = 0; i < count; ++i) dst[i] = static_cast<T>(dst[i] + src[i]);
}

template <typename T>
void add_divide(T* __restrict dst, const T* __restrict src, size_t count, T divisor) {
#pragma GCC ivdep
  for (size_t i = 0; i < count; ++i) dst[i] = static_cast<T>((dst[i] + src[i]) / divisor);
}

void add_bf16(uint16_t* __restrict dst, const uint16_t* __restrict src, size_t count) {
#pragma GCC ivdep
  for (size_t i = 0; i < count; ++i) dst[i] = float_to_bf16(bf16_to_float(dst[i]) + bf16_to_float(src[i]));
}

void add_divide_bf16(uint16_t* __restrict dst, const uint16_t* __restrict src, size_t count, float divisor) {
#pragma GCC ivdep
  for (size_t i = 0; i < count; ++i) {
    dst[i] = float_to_bf16((bf16_to_float(dst[i]) + bf16_to_float(src[i])) / divisor);
  }
}

template <typename T>
void divide(T* __restrict data, size_t count, T divisor) {
#pragma GCC ivdep
  for (size_t i = 0; i < count; ++i) data[i] = static_cast<T>(data[i] / divisor);
}

}  // namespace

DGR_KERNEL_CLONES void reduce_into(void* dst, const void* src, size_t count, DType dtype, int divisor) {
  const bool divides = divisor > 1;
  switch (dtype) {
    case DType::kFloat32:
      if (divides) {
        add_divide(static_cast<float*>(dst), static_cast<const float*>(src), count, static_cast<float>(divisor));
      } else {
        add(static_cast<float*>(dst), static_cast<const float*>(src), count);
      }
      return;
    case DType::kBFloat16:
      if (divides) {
        add_divide_bf16(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), count,
                        static_cast<float>(divisor));
      } else {
        add_bf16(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(src), count);
      }
      return;
    case DType::kInt32:
      if (divides) {
        add_divide(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), count, divisor);
      } else {
        add(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), count);
      }
      return;
    case DType::kInt64:
      if (divides) {
        add_divide(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), count,
                   static_cast<int64_t>(divisor));
      } else {
        add(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), count);
      }
      return;
  }
  DGR_CHECK(false, "unknown dtype {}", static_cast<int>(dtype));
}

DGR_KERNEL_CLONES void divide_in_place(void* data, size_t count, DType dtype, int divisor) {
  if (divisor <= 1) return;
  switch (dtype) {
    case DType::kFloat32:
      divide(static_cast<float*>(data), count, static_cast<float>(divisor));
      return;
    case DType::kBFloat16: {
      auto* values = static_cast<uint16_t*>(data);
      const float fp32_divisor = static_cast<float>(divisor);
#pragma GCC ivdep
      for (size_t i = 0; i < count; ++i) values[i] = float_to_bf16(bf16_to_float(values[i]) / fp32_divisor);
      return;
    }
    case DType::kInt32:
      divide(static_cast<int32_t*>(data), count, divisor);
      return;
    case DType::kInt64:
      divide(static_cast<int64_t*>(data), count, static_cast<int64_t>(divisor));
      return;
  }
  DGR_CHECK(false, "unknown dtype {}", static_cast<int>(dtype));
}

DGR_KERNEL_CLONES void bf16_to_float_n(const uint16_t* __restrict src, float* __restrict dst, size_t count) {
#pragma GCC ivdep
  for (size_t i = 0; i < count; ++i) dst[i] = bf16_to_float(src[i]);
}

DGR_KERNEL_CLONES void float_to_bf16_n(const float* __restrict src, uint16_t* __restrict dst, size_t count, int divisor) {
  if (divisor > 1) {
    const float fp32_divisor = static_cast<float>(divisor);
#pragma GCC ivdep
    for (size_t i = 0; i < count; ++i) dst[i] = float_to_bf16(src[i] / fp32_divisor);
  } else {
#pragma GCC ivdep
    for (size_t i = 0; i < count; ++i) dst[i] = float_to_bf16(src[i]);
  }
}

}  // namespace dgr::comm::detail
