// Named arrays: what the HDF5 wrapper (data/hdf5_file.h) writes and reads, for checkpoints and for the
// prepared data sets. The trainer converts tensors to and from these; this module never sees LibTorch. A
// NamedArray owns its bytes, so a background writer can use them safely.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace dgr::data {

// Element types a file can hold. bfloat16 is stored as HDF5 uint16 with the attribute dtype="bfloat16"
// (HDF5 has no bf16 type); its bytes are kept exactly.
enum class DType { kFloat32, kBFloat16, kFloat64, kInt64, kInt32, kUInt8, kInt8, kUInt64 };

size_t dtype_size(DType dtype);       // bytes per element
const char* dtype_name(DType dtype);  // "float32", "bfloat16", "float64", "int64", "int32", "uint8", "int8", "uint64"
// Inverse of dtype_name; nullopt for a name it does not know.
std::optional<DType> dtype_from_name(const std::string& name);
// The names dtype_from_name knows, for error messages: "float32, bfloat16, ...".
std::string known_dtype_names();

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

std::string shape_string(const std::vector<int64_t>& shape);  // "[3, 4]", "[]" for a scalar

// What is wrong with `name` as an array name (see NamedArray::name), "" when it is valid.
std::string array_name_problem(const std::string& name);

}  // namespace dgr::data
