// DType helpers, array-name rules and NamedArray's allocation.
#include "data/array.h"

#include <sys/mman.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"

namespace dgr::data {
namespace {
constexpr DType kAllDTypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat64, DType::kInt64,
                                DType::kInt32,   DType::kUInt8,    DType::kInt8,    DType::kUInt64};
}  // namespace

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kFloat64: return 8;
    case DType::kInt64: return 8;
    case DType::kInt32: return 4;
    case DType::kUInt8: return 1;
    case DType::kInt8: return 1;
    case DType::kUInt64: return 8;
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
    case DType::kInt8: return "int8";
    case DType::kUInt64: return "uint64";
  }
  return "?";
}

std::optional<DType> dtype_from_name(const std::string& name) {
  for (DType d : kAllDTypes) {
    if (name == dtype_name(d)) return d;
  }
  return std::nullopt;
}

std::string known_dtype_names() {
  std::vector<std::string> names;
  for (DType d : kAllDTypes) names.emplace_back(dtype_name(d));
  return fmt::format("{}", fmt::join(names, ", "));
}

int64_t NamedArray::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

NamedArray NamedArray::allocate(std::string name, std::vector<int64_t> shape, DType dtype) {
  NamedArray a;
  a.name = std::move(name);
  a.shape = std::move(shape);
  a.dtype = dtype;
  for (int64_t d : a.shape) DGR_CHECK(d >= 0, "array {}: negative dimension in shape {}", a.name, shape_string(a.shape));
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

std::string shape_string(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

std::string array_name_problem(const std::string& name) {
  bool ok = !name.empty() && name.front() != '/' && name.back() != '/' && name.find("//") == std::string::npos;
  size_t start = 0;
  while (ok && start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string part = name.substr(start, end - start);
    ok = part != "." && part != "..";
    start = end + 1;
  }
  if (ok) return "";
  return fmt::format("invalid array name '{}': use a state-dict key such as 'encoder.layers.0.weight' ('/' only "
                     "between non-empty group names, no '.' or '..' parts)", name);
}

}  // namespace dgr::data
