// DType helpers, array-name rules and the model-vs-file check the trainer runs after a load.
#include "checkpoints/array.h"

#include <sys/mman.h>

#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"

namespace dgr::checkpoints {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kFloat64: return 8;
    case DType::kInt64: return 8;
    case DType::kInt32: return 4;
    case DType::kUInt8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat64: return "float64";
    case DType::kInt64: return "int64";
    case DType::kInt32: return "int32";
    case DType::kUInt8: return "uint8";
  }
  return "?";
}

DType parse_dtype(const std::string& name) {
  for (DType d : {DType::kFloat32, DType::kBFloat16, DType::kFloat64, DType::kInt64, DType::kInt32,
                  DType::kUInt8}) {
    if (name == dtype_name(d)) return d;
  }
  throw CheckpointError(fmt::format(
      "unknown dtype '{}' (known: float32, bfloat16, float64, int64, int32, uint8; was the file written by "
      "a newer dgr?)", name));
}

int64_t NamedArray::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

// An array without bytes yet: name, shape (checked) and dtype.
NamedArray described(std::string name, std::vector<int64_t> shape, DType dtype) {
  NamedArray a;
  a.name = std::move(name);
  a.shape = std::move(shape);
  a.dtype = dtype;
  for (int64_t d : a.shape) {
    DGR_CHECK_AS(CheckpointError, d >= 0, "array {}: negative dimension in shape {}", a.name, shape_string(a.shape));
  }
  return a;
}

}  // namespace

NamedArray NamedArray::allocate(std::string name, std::vector<int64_t> shape, DType dtype) {
  NamedArray a = described(std::move(name), std::move(shape), dtype);
  const size_t num_bytes = a.num_bytes();
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  if (num_bytes >= 2 * kHugePage) {
    a.bytes.reserve(num_bytes);  // allocated, not yet touched
    auto begin = reinterpret_cast<uintptr_t>(a.bytes.data());
    uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
    uintptr_t last = (begin + num_bytes) & ~(kHugePage - 1);
    if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // a hint only
  }
  a.bytes.resize(num_bytes);
  return a;
}

NamedArray NamedArray::copy_of(std::string name, std::vector<int64_t> shape, DType dtype, const void* data) {
  NamedArray a = allocate(std::move(name), std::move(shape), dtype);
  if (!a.bytes.empty()) std::memcpy(a.bytes.data(), data, a.bytes.size());
  return a;
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
  NamedArray a = described(std::move(name), std::move(shape), dtype);
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

std::string shape_string(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

void check_array_name(const std::string& name) {
  bool ok = !name.empty() && name.front() != '/' && name.back() != '/' && name.find("//") == std::string::npos;
  size_t start = 0;
  while (ok && start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string part = name.substr(start, end - start);
    ok = part != "." && part != "..";
    start = end + 1;
  }
  DGR_CHECK_AS(CheckpointError, ok,
               "invalid array name '{}': use a state-dict key such as 'encoder.layers.0.weight' ('/' only "
               "between non-empty group names, no '.' or '..' parts)", name);
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
