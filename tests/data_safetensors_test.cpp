// safetensors files (data/safetensors.h): a written file reads back element for element, and every malformed
// header is a DataError naming the file and the tensor. (Against Hugging Face's package: safetensors_test.sh.)
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>

#include "common/error.h"
#include "data/safetensors.h"
#include "tests/temp_dir.h"

namespace dgr::data {
namespace {

// A file with `header` (JSON text) and `buffer` bytes.
std::string make_file(const testing::TempDir& dir, const std::string& name, const std::string& header,
                      const std::string& buffer) {
  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  const std::string path = dir.file(name);
  std::ofstream(path, std::ios::binary) << length << header << buffer;
  return path;
}

::testing::AssertionResult refused(const std::string& path, const std::string& needle) {
  try {
    read_safetensors(path);
  } catch (const DataError& e) {
    const std::string what = e.what();
    if (what.find(path + ": ") != std::string::npos && what.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message: " << what;
  }
  return ::testing::AssertionFailure() << "no DataError";
}

TEST(Safetensors, WrittenFilesReadBackAndF16Widens) {
  testing::TempDir dir("dgr_safetensors");
  const float w[6] = {1.5f, -2.f, 0.f, 3.25f, 1e-30f, -7.f};
  const int64_t ids[2] = {-5, 1LL << 40};
  const std::vector<NamedArray> arrays = {NamedArray::copy_of("a.weight", {2, 3}, DType::kFloat32, w),
                                          NamedArray::copy_of("ids", {2}, DType::kInt64, ids),
                                          NamedArray::allocate("empty", {0, 5}, DType::kFloat32)};
  write_safetensors(dir.file("x.safetensors"), arrays, {{"format", "pt"}});
  const auto back = read_safetensors(dir.file("x.safetensors"));
  ASSERT_EQ(back.arrays.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back.arrays[i].name, arrays[i].name);
    EXPECT_EQ(back.arrays[i].shape, arrays[i].shape);
    EXPECT_EQ(back.arrays[i].dtype, arrays[i].dtype);
    EXPECT_EQ(back.arrays[i].bytes, arrays[i].bytes);
  }
  EXPECT_EQ(back.metadata.at("format"), "pt");
  std::ifstream in(dir.file("x.safetensors"), std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);  // padded like the reference writer

  // F16 1, -2, 65504, 2^-24 (subnormal), -0, inf -> the same floats.
  const uint16_t halves[6] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0x7C00};
  std::string buffer(reinterpret_cast<const char*>(halves), sizeof halves);
  const auto h = read_safetensors(make_file(dir, "h.safetensors",
      R"({"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]}})", buffer));
  ASSERT_EQ(h.arrays.size(), 1u);
  EXPECT_EQ(h.arrays[0].dtype, DType::kFloat32);
  const auto f = h.arrays[0].values<float>();
  EXPECT_EQ(f, (std::vector<float>{1.f, -2.f, 65504.f, 5.9604644775390625e-8f, -0.f, INFINITY}));
  EXPECT_TRUE(std::signbit(f[4]));
}

TEST(Safetensors, MalformedFilesAreRefusedNamingTheTensor) {
  testing::TempDir dir("dgr_safetensors");
  const std::string eight(8, '\1'), sixteen(16, '\1');
  EXPECT_TRUE(refused(make_file(dir, "hole", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
                      "tensor 'a' starts at byte 4 where 0 was expected"));
  EXPECT_TRUE(refused(make_file(dir, "overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", sixteen), "overlap"));
  EXPECT_TRUE(refused(make_file(dir, "size", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
                      "tensor 'a' (F32 [3]) needs 12 bytes"));
  EXPECT_TRUE(refused(make_file(dir, "dtype", R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", eight),
                      "tensor 'a' has dtype F8_E4M3"));
  EXPECT_TRUE(refused(make_file(dir, "beyond", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight),
                      "tensor 'a' ends at byte 16 of a 8-byte buffer"));
  EXPECT_TRUE(refused(make_file(dir, "unused", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight),
                      "cover 4 of the buffer's 8 bytes"));
  EXPECT_TRUE(refused(make_file(dir, "json", R"({"a":)", eight), "not a JSON object"));
  EXPECT_TRUE(refused(make_file(dir, "fields", R"({"a":{"dtype":"F32","shape":[2]}})", eight), "lacks dtype"));
  const std::string path = dir.file("short");
  std::ofstream(path, std::ios::binary) << std::string("\x40\0\0\0\0\0\0\0{}", 10);
  EXPECT_TRUE(refused(path, "the header says 64 bytes"));
}

}  // namespace
}  // namespace dgr::data
