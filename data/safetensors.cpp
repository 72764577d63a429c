#include "data/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"

namespace dgr::data {
namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference reader's limit

struct Kind {
  const char* name;
  DType dtype;
};
constexpr Kind kKinds[] = {{"F32", DType::kFloat32}, {"BF16", DType::kBFloat16}, {"F64", DType::kFloat64},
                           {"I64", DType::kInt64},   {"I32", DType::kInt32},     {"U8", DType::kUInt8},
                           {"I8", DType::kInt8},     {"U64", DType::kUInt64}};

const char* safetensors_name(DType dtype) {
  for (const auto& k : kKinds)
    if (k.dtype == dtype) return k.name;
  DGR_CHECK(false, "no safetensors dtype for {}", dtype_name(dtype));
  return "";
}

// IEEE half -> float, exactly (every half is a float).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000 | (mantissa << 13);  // inf / nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;  // +-0
  } else {  // subnormal half: normalise
    exponent = 113;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace

SafetensorsContents read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DGR_CHECK_AS(DataError, in.good(), "{}: cannot be opened", path);
  const uint64_t file_size = std::filesystem::file_size(path);
  uint8_t length_bytes[8] = {};
  DGR_CHECK_AS(DataError, file_size >= 8 && in.read(reinterpret_cast<char*>(length_bytes), 8),
               "{}: {} bytes, shorter than the 8-byte header length (not a safetensors file, or truncated)", path,
               file_size);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | length_bytes[i];
  DGR_CHECK_AS(DataError, header_size <= kMaxHeader && header_size <= file_size - 8,
               "{}: the header says {} bytes of JSON but the file has {} after the length (truncated, or not a "
               "safetensors file)", path, header_size, file_size - 8);
  std::string header(header_size, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_size));
  const auto json = nlohmann::json::parse(header, nullptr, false);
  DGR_CHECK_AS(DataError, !json.is_discarded() && json.is_object(), "{}: the header is not a JSON object (truncated "
               "or corrupt file: re-save it with save_pretrained)", path);
  const uint64_t buffer_size = file_size - 8 - header_size;

  SafetensorsContents out;
  struct Entry {
    uint64_t begin, end;
    NamedArray array;
    bool half;
  };
  std::vector<Entry> entries;
  for (const auto& [name, value] : json.items()) {
    if (name == "__metadata__") {
      DGR_CHECK_AS(DataError, value.is_object(), "{}: __metadata__ is not an object of strings", path);
      for (const auto& [key, v] : value.items()) {
        DGR_CHECK_AS(DataError, v.is_string(), "{}: __metadata__ '{}' is not a string", path, key);
        out.metadata[key] = v.get<std::string>();
      }
      continue;
    }
    DGR_CHECK_AS(DataError, value.is_object() && value.contains("dtype") && value.contains("shape") &&
                 value.contains("data_offsets") && value.at("dtype").is_string() && value.at("shape").is_array() &&
                 value.at("data_offsets").is_array() && value.at("data_offsets").size() == 2,
                 "{}: tensor '{}' lacks dtype, shape or data_offsets [begin, end]", path, name);
    Entry e{0, 0, {}, false};
    e.array.name = name;
    for (const auto& d : value.at("shape")) {
      DGR_CHECK_AS(DataError, d.is_number_integer() && d.get<int64_t>() >= 0, "{}: tensor '{}' has shape {}", path,
                   name, value.at("shape").dump());
      e.array.shape.push_back(d.get<int64_t>());
    }
    const std::string dtype = value.at("dtype").get<std::string>();
    size_t element_size = 0;
    if (dtype == "F16") {
      e.half = true;
      e.array.dtype = DType::kFloat32;
      element_size = 2;
    } else {
      const auto* kind = std::find_if(std::begin(kKinds), std::end(kKinds), [&](const Kind& k) { return dtype == k.name; });
      DGR_CHECK_AS(DataError, kind != std::end(kKinds), "{}: tensor '{}' has dtype {}, which dgr does not read (F32, "
                   "F16, BF16, F64, I64, I32, U8, I8, U64)", path, name, dtype);
      e.array.dtype = kind->dtype;
      element_size = dtype_size(kind->dtype);
    }
    for (const auto& o : value.at("data_offsets"))
      DGR_CHECK_AS(DataError, o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0),
                   "{}: tensor '{}' has data_offsets {}", path, name, value.at("data_offsets").dump());
    e.begin = value.at("data_offsets")[0].get<uint64_t>();
    e.end = value.at("data_offsets")[1].get<uint64_t>();
    const uint64_t expected = static_cast<uint64_t>(e.array.num_elements()) * element_size;
    DGR_CHECK_AS(DataError, e.begin <= e.end && e.end - e.begin == expected,
                 "{}: tensor '{}' ({} {}) needs {} bytes but data_offsets [{}, {}] give {}", path, name, dtype,
                 shape_string(e.array.shape), expected, e.begin, e.end, e.end - e.begin);
    DGR_CHECK_AS(DataError, e.end <= buffer_size, "{}: tensor '{}' ends at byte {} of a {}-byte buffer (truncated file)",
                 path, name, e.end, buffer_size);
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  uint64_t covered = 0;
  for (const auto& e : entries) {
    DGR_CHECK_AS(DataError, e.begin == covered, "{}: tensor '{}' starts at byte {} where {} was expected (the tensors "
                 "{} the buffer)", path, e.array.name, e.begin, covered, e.begin > covered ? "leave a hole in" : "overlap in");
    covered = e.end;
  }
  DGR_CHECK_AS(DataError, covered == buffer_size, "{}: the tensors cover {} of the buffer's {} bytes", path, covered,
               buffer_size);

  for (auto& e : entries) {
    NamedArray array = NamedArray::allocate(e.array.name, e.array.shape, e.array.dtype);
    in.seekg(static_cast<std::streamoff>(8 + header_size + e.begin));
    if (e.half) {
      std::vector<uint16_t> halves(static_cast<size_t>(array.num_elements()));
      in.read(reinterpret_cast<char*>(halves.data()), static_cast<std::streamsize>(e.end - e.begin));
      auto* floats = reinterpret_cast<float*>(array.bytes.data());
      for (size_t i = 0; i < halves.size(); ++i) floats[i] = half_to_float(halves[i]);
    } else {
      in.read(reinterpret_cast<char*>(array.bytes.data()), static_cast<std::streamsize>(e.end - e.begin));
    }
    DGR_CHECK_AS(DataError, in.good() || e.end == e.begin, "{}: reading tensor '{}' failed", path, e.array.name);
    out.arrays.push_back(std::move(array));
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<NamedArray>& arrays,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& a : arrays) {
    DGR_CHECK(!a.name.empty() && a.name != "__metadata__" && names.insert(a.name).second,
              "{}: tensor name '{}' is empty, reserved or repeated", path, a.name);
    DGR_CHECK(a.bytes.size() == a.num_bytes(), "{}: tensor '{}' holds {} bytes, its shape {} needs {}", path, a.name,
              a.bytes.size(), shape_string(a.shape), a.num_bytes());
    header[a.name] = {{"dtype", safetensors_name(a.dtype)}, {"shape", a.shape},
                      {"data_offsets", {offset, offset + a.bytes.size()}}};
    offset += a.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[static_cast<size_t>(i)] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);
  files::AtomicFile file(path);
  file.write(length);
  file.write(text);
  for (const auto& a : arrays) file.write(std::string(reinterpret_cast<const char*>(a.bytes.data()), a.bytes.size()));
  file.commit();
}

}  // namespace dgr::data
