// Element-wise kernels of the collectives: dst += src (optionally followed by the average's division) for
// every dtype, bf16 <-> fp32 conversion with round-to-nearest-even, in tight loops the compiler vectorises.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "comm/communicator.h"

namespace dgr::comm::detail {

// bf16 is the upper half of an fp32: widening is exact.
inline float bf16_to_float(uint16_t value) {
  uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

// Round to nearest, ties to even; NaN stays a (quiet) NaN, infinities stay infinite.
inline uint16_t float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  uint32_t quiet_nan = (bits >> 16) | 0x40u;
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

// dst[i] = dst[i] + src[i] for i < count; when divisor > 1 the sum is then divided by it (kAverage's
// last step: fp32 division for fp32 and bf16, integer division truncating toward zero for int32/int64).
// bf16: both operands widened to fp32, added (and divided) in fp32, rounded once to bf16.
// dst and src must not overlap.
void reduce_into(void* dst, const void* src, size_t count, DType dtype, int divisor);

// data[i] /= divisor, with the arithmetic of reduce_into.
void divide_in_place(void* data, size_t count, DType dtype, int divisor);

// The mpi backend's bf16 path: widen to fp32, and round back (dividing by divisor first when > 1).
void bf16_to_float_n(const uint16_t* src, float* dst, size_t count);
void float_to_bf16_n(const float* src, uint16_t* dst, size_t count, int divisor);

}  // namespace dgr::comm::detail
