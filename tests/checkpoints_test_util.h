// Helpers shared by the checkpoints/ tests (checkpoints_test.cpp: arrays, HDF5, staging, export files;
// checkpoints_store_test.cpp: the step-directory protocol): a temporary directory, arrays with
// position-dependent bytes, a store and a request, comparisons, a capture of the "ckpt" logger, a byte flipper.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "checkpoints/array.h"
#include "checkpoints/store.h"
#include "common/error.h"
#include "common/log.h"
#include "common/world.h"

namespace dgr_checkpoints_test {

namespace fs = std::filesystem;
using namespace dgr::checkpoints;

inline const dgr::World& world() {
  static dgr::World w(nullptr, nullptr);  // MPI singleton: one rank
  return w;
}

struct TempDir {
  std::string path;
  TempDir() {
    char name[] = "/tmp/dgr_ckpt_test_XXXXXX";
    path = ::mkdtemp(name);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& child) const { return path + "/" + child; }
};

// Bytes that depend on the array's name, the seed and the index, so a swapped or shifted array cannot pass.
inline NamedArray pattern(const std::string& name, std::vector<int64_t> shape, DType dtype, uint32_t seed) {
  NamedArray a;
  a.name = name;
  a.shape = std::move(shape);
  a.dtype = dtype;
  a.bytes.resize(a.num_bytes());
  uint32_t h = seed * 2654435761u;
  for (char c : name) h = h * 31 + static_cast<uint8_t>(c);
  for (size_t i = 0; i < a.bytes.size(); ++i) a.bytes[i] = static_cast<uint8_t>((h + i * 131 + (i >> 8) * 7) & 0xff);
  return a;
}

// A finite float32 array (values exact in float), for tests that look for the data in the raw file.
inline NamedArray floats(const std::string& name, std::vector<int64_t> shape, float offset) {
  NamedArray a;
  a.name = name;
  a.shape = std::move(shape);
  a.dtype = DType::kFloat32;
  std::vector<float> v(static_cast<size_t>(a.num_elements()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = offset + static_cast<float>(i % 65521);
  a.bytes.resize(v.size() * 4);
  std::memcpy(a.bytes.data(), v.data(), a.bytes.size());
  return a;
}

inline void expect_same(const std::vector<NamedArray>& expected, const std::vector<NamedArray>& found) {
  ASSERT_EQ(expected.size(), found.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(expected[i].name, found[i].name);
    EXPECT_EQ(expected[i].shape, found[i].shape) << expected[i].name;
    EXPECT_EQ(expected[i].dtype, found[i].dtype) << expected[i].name;
    EXPECT_TRUE(expected[i].bytes == found[i].bytes) << expected[i].name << ": bytes differ";
  }
}

inline std::vector<NamedArray> sorted(std::vector<NamedArray> arrays) {
  std::sort(arrays.begin(), arrays.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return arrays;
}

// Captures what the "ckpt" logger says while alive.
struct LogCapture {
  std::ostringstream text;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(text);
  std::shared_ptr<spdlog::logger> logger = dgr::log::get("ckpt");
  LogCapture() { logger->sinks().push_back(sink); }
  ~LogCapture() { logger->sinks().pop_back(); }
  std::string str() { return text.str(); }
};

inline std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dgr::CheckpointError& e) {
    return e.what();
  }
  return "<no CheckpointError>";
}

inline void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

// A Store in `dir`, and a request for `step` whose every byte depends on the step.
inline StoreOptions options_for(const std::string& dir, bool async = true, int keep_last = 3) {
  StoreOptions o;
  o.dir = dir;
  o.async = async;
  o.keep_last = keep_last;
  return o;
}

inline SaveRequest request_for(int64_t step, size_t elements = 1000) {
  SaveRequest r;
  r.step = step;
  r.replicated = {floats("encoder.weight", {static_cast<int64_t>(elements)}, static_cast<float>(step)),
                  pattern("adam_m/encoder.weight", {static_cast<int64_t>(elements)}, DType::kFloat32, step),
                  pattern("adam_step", {}, DType::kInt64, step),
                  pattern("embed.bf16", {7, 3}, DType::kBFloat16, step)};
  r.per_rank = {pattern("rng.cpu", {5056}, DType::kUInt8, step), pattern("rng.cuda", {0}, DType::kUInt8, step)};
  r.config_json = nlohmann::json{{"model", {{"d_model", 256}}}, {"lr", 3e-4}}.dump();
  r.state_json = nlohmann::json{{"epoch", 2}, {"permutation_seed", 7}, {"lr_step", step}}.dump();
  r.rank_state_json = nlohmann::json{{"cursors", {step, step + 1}}}.dump();
  return r;
}

}  // namespace dgr_checkpoints_test
