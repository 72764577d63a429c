// What checkpoints/ adds to the named arrays of data/array.h: recycled host buffers for saves, the expected
// arrays of a model and the check of a loaded file against them. Never LibTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "data/array.h"

namespace dgr::checkpoints {

// The array types live in data/ (the HDF5 wrapper writes them for checkpoints and data sets alike); they are
// checkpoints:: names too, so the trainer and the store say checkpoints::NamedArray as before.
using data::DType;
using data::dtype_name;
using data::dtype_size;
using data::NamedArray;
using data::shape_string;

DType parse_dtype(const std::string& name);  // inverse of dtype_name; throws CheckpointError when unknown

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

// Checks `found` (read from `file`) against `expected`: every missing, unexpected, wrong-shape or
// wrong-dtype array is listed in ONE CheckpointError that names the file and says what to do. Local.
void check_arrays(const std::vector<NamedArray>& found, const std::vector<ArraySpec>& expected,
                  const std::string& file);

// Throws CheckpointError when `name` is not a valid array name (see NamedArray::name).
void check_array_name(const std::string& name);

}  // namespace dgr::checkpoints
