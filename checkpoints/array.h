// Named arrays: what checkpoints/ stores and loads. The trainer converts tensors to and from these; this
// module never sees LibTorch. A NamedArray owns its bytes, so a background writer can use them safely.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace dgr::checkpoints {

// Element types a checkpoint can hold. bfloat16 is stored as HDF5 uint16 with the attribute
// dtype="bfloat16" (HDF5 has no bf16 type); its bytes are kept exactly.
enum class DType { kFloat32, kBFloat16, kFloat64, kInt64, kInt32, kUInt8 };

size_t dtype_size(DType dtype);              // bytes per element
const char* dtype_name(DType dtype);         // "float32", "bfloat16", "float64", "int64", "int32", "uint8"
DType parse_dtype(const std::string& name);  // inverse of dtype_name; throws CheckpointError when unknown

struct NamedArray {
  // State-dict key, e.g. "encoder.layers.0.weight". Dots are kept; '/' separates HDF5 groups
  // ("adam_m/encoder.weight" is dataset encoder.weight in group adam_m). Empty parts are not allowed.
  std::string name;
  std::vector<int64_t> shape;  // [] = scalar (one element); a 0 anywhere = no elements
  DType dtype = DType::kFloat32;
  std::vector<uint8_t> bytes;  // [num_elements * dtype_size] row-major, native (little-endian) order

  int64_t num_elements() const;
  size_t num_bytes() const { return static_cast<size_t>(num_elements()) * dtype_size(dtype); }

  // An array of zero bytes, sized for shape x dtype. Buffers of 4 MiB and more ask the kernel for
  // transparent huge pages (madvise): touching fresh 4 KiB pages one by one costs more than the copy itself
  // on VMs (256 MiB: 0.8 s against 0.03 s measured). Use it for host copies of tensors.
  static NamedArray allocate(std::string name, std::vector<int64_t> shape, DType dtype);
  // allocate() + a copy of `num_bytes()` bytes from `data` (e.g. a CPU tensor's data_ptr()).
  static NamedArray copy_of(std::string name, std::vector<int64_t> shape, DType dtype, const void* data);

  // Typed views for tests and small state (the caller picks T of the right size).
  template <typename T>
  std::vector<T> values() const {
    std::vector<T> out(bytes.size() / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
  }
};

// Host buffers recycled from one checkpoint save to the next (Note [Staging buffers] in array.cpp): the
// trainer copies its tensors into arrays taken from the pool, the checkpoint writer gives them back when
// the files are written, and the next save copies into memory that is already mapped. Thread-safe.
class StagingPool {
 public:
  // An array of shape x dtype. Its bytes are a recycled buffer of exactly that size when the pool has one
  // (NOT zeroed: the caller overwrites every byte), a fresh NamedArray::allocate() otherwise.
  NamedArray take(std::string name, std::vector<int64_t> shape, DType dtype);
  // take() + a copy of `num_bytes()` bytes from `data`.
  NamedArray copy_of(std::string name, std::vector<int64_t> shape, DType dtype, const void* data);
  // Hands back the buffers of one save's arrays. They replace what the pool held before (buffers nobody
  // took are freed), so the pool never holds more than one save's worth of memory.
  void give_back(std::vector<NamedArray>&& arrays);
  size_t pooled_bytes() const;  // bytes waiting to be taken

 private:
  mutable std::mutex mutex_;
  std::multimap<size_t, std::vector<uint8_t>> free_;  // byte size -> buffer
  size_t pooled_bytes_ = 0;
};

// What the model expects an array to be.
struct ArraySpec {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kFloat32;
};

std::string shape_string(const std::vector<int64_t>& shape);  // "[3, 4]", "[]" for a scalar

// Checks `found` (read from `file`) against `expected`: every missing, unexpected, wrong-shape or
// wrong-dtype array is listed in ONE CheckpointError that names the file and says what to do. Local.
void check_arrays(const std::vector<NamedArray>& found, const std::vector<ArraySpec>& expected,
                  const std::string& file);

// Throws CheckpointError when `name` is not a valid array name (see NamedArray::name).
void check_array_name(const std::string& name);

}  // namespace dgr::checkpoints
