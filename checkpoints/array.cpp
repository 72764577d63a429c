// Staging buffers, the checked dtype and array-name rules, and the model-vs-file check the trainer runs after a load.
#include "checkpoints/array.h"

#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"

namespace dgr::checkpoints {

DType parse_dtype(const std::string& name) {
  std::optional<DType> dtype = data::dtype_from_name(name);
  if (!dtype) {
    throw CheckpointError(fmt::format("unknown dtype '{}' (known: {}; was the file written by a newer dgr?)", name,
                                      data::known_dtype_names()));
  }
  return *dtype;
}

// Note [Staging buffers]
// A checkpoint needs a host copy of every tensor, taken while training waits (the writer thread then writes
// the copy while the parameters move on). Into freshly allocated memory that copy runs at page-fault speed,
// not memcpy speed: each new 4 KiB page is zeroed and mapped by the kernel on first touch (256 MiB: ~0.25 s
// against ~0.02 s into mapped memory, bench/checkpoint_bench.cpp). Checkpoints of one run have the same
// arrays every time, so the writer gives its buffers back when the files are written and the next save
// copies into them. Matching is by byte size only: a buffer is raw bytes, and names, shapes and dtypes are
// set on take(). Giving back replaces the previous pool, which bounds the memory to one save in flight plus
// one save's buffers waiting, the same as a writer that frees its copies and a trainer that allocates new ones.
NamedArray StagingPool::take(std::string name, std::vector<int64_t> shape, DType dtype) {
  for (int64_t d : shape) {
    DGR_CHECK_AS(CheckpointError, d >= 0, "array {}: negative dimension in shape {}", name, shape_string(shape));
  }
  NamedArray a;
  a.name = std::move(name);
  a.shape = std::move(shape);
  a.dtype = dtype;
  const size_t num_bytes = a.num_bytes();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(num_bytes);
    if (it != free_.end()) {
      a.bytes = std::move(it->second);
      free_.erase(it);
      pooled_bytes_ -= num_bytes;
      return a;
    }
  }
  return NamedArray::allocate(std::move(a.name), std::move(a.shape), dtype);
}

NamedArray StagingPool::copy_of(std::string name, std::vector<int64_t> shape, DType dtype, const void* data) {
  NamedArray a = take(std::move(name), std::move(shape), dtype);
  if (!a.bytes.empty()) std::memcpy(a.bytes.data(), data, a.bytes.size());
  return a;
}

void StagingPool::give_back(std::vector<NamedArray>&& arrays) {
  std::multimap<size_t, std::vector<uint8_t>> fresh;
  size_t fresh_bytes = 0;
  for (auto& a : arrays) {
    if (a.bytes.size() != a.num_bytes()) continue;  // not a buffer take() could hand out again
    fresh_bytes += a.bytes.size();
    fresh.emplace(a.bytes.size(), std::move(a.bytes));
  }
  std::vector<NamedArray>().swap(arrays);
  std::multimap<size_t, std::vector<uint8_t>> old;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    old.swap(free_);
    free_.swap(fresh);
    pooled_bytes_ = fresh_bytes;
  }
  // `old` (the buffers nobody took) is freed here, outside the lock.
}

size_t StagingPool::pooled_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pooled_bytes_;
}

void check_array_name(const std::string& name) {
  std::string problem = data::array_name_problem(name);
  DGR_CHECK_AS(CheckpointError, problem.empty(), "{}", problem);
}

void check_arrays(const std::vector<NamedArray>& found, const std::vector<ArraySpec>& expected,
                  const std::string& file) {
  std::map<std::string, const NamedArray*> by_name;
  for (const auto& a : found) by_name[a.name] = &a;
  std::vector<std::string> problems;
  std::map<std::string, bool> seen;
  for (const auto& spec : expected) {
    seen[spec.name] = true;
    auto it = by_name.find(spec.name);
    if (it == by_name.end()) {
      problems.push_back(fmt::format("missing '{}' {} {}", spec.name, dtype_name(spec.dtype), shape_string(spec.shape)));
      continue;
    }
    const NamedArray& a = *it->second;
    if (a.shape != spec.shape || a.dtype != spec.dtype) {
      problems.push_back(fmt::format("'{}' is {} {} in the file, the model has {} {}", spec.name,
                                     dtype_name(a.dtype), shape_string(a.shape), dtype_name(spec.dtype),
                                     shape_string(spec.shape)));
    }
  }
  for (const auto& a : found) {
    if (!seen.count(a.name)) {
      problems.push_back(fmt::format("unexpected '{}' {} {}", a.name, dtype_name(a.dtype), shape_string(a.shape)));
    }
  }
  if (problems.empty()) return;
  throw CheckpointError(fmt::format(
      "{}: does not match the model ({} problem{}: {}): was it written for another model config? Resume with "
      "the config stored in the checkpoint's meta.json, or start from scratch in another directory",
      file, problems.size(), problems.size() == 1 ? "" : "s", fmt::join(problems, "; ")));
}

}  // namespace dgr::checkpoints
