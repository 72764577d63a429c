// checkpoints/ in one process: arrays (dtypes, names, checks), HDF5 round trips of every dtype and odd
// shapes with Fletcher-32 really on, the staging pool, export files. The Store protocol is in
// checkpoints_store_test.cpp.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "checkpoints/array.h"
#include "checkpoints/export.h"
#include "data/hdf5_file.h"
#include "common/files.h"
#include "tests/checkpoints_test_util.h"

// HDF5's own Fletcher-32 (exported by libhdf5, declared only in its private headers): the reference.
extern "C" uint32_t H5_checksum_fletcher32(const void* data, size_t len);

namespace fs = std::filesystem;
using namespace dgr::checkpoints;
using namespace dgr_checkpoints_test;
using json = nlohmann::json;

namespace {

// ---------------------------------------------------------------------------------------------------------
// Arrays and HDF5

TEST(Array, DTypeNamesRoundTrip) {
  for (DType d : {DType::kFloat32, DType::kBFloat16, DType::kFloat64, DType::kInt64, DType::kInt32, DType::kUInt8}) {
    EXPECT_EQ(parse_dtype(dtype_name(d)), d);
  }
  EXPECT_EQ(dtype_size(DType::kBFloat16), 2u);
  EXPECT_THROW(parse_dtype("float16"), dgr::CheckpointError);
}

TEST(Array, NameRules) {
  for (const char* good : {"w", "encoder.layers.0.weight", "adam_m/encoder.weight", "a/b/c.d"}) {
    EXPECT_NO_THROW(check_array_name(good)) << good;
  }
  for (const char* bad : {"", "/w", "w/", "a//b", "a/./b", "../w", "."}) {
    EXPECT_THROW(check_array_name(bad), dgr::CheckpointError) << bad;
  }
}

TEST(Array, CheckArraysListsEveryProblemAndTheFile) {
  std::vector<NamedArray> found = {pattern("a", {2, 3}, DType::kFloat32, 1), pattern("b", {4}, DType::kInt64, 1),
                                   pattern("extra", {1}, DType::kUInt8, 1), pattern("ok", {5}, DType::kFloat32, 1)};
  std::vector<ArraySpec> expected = {{"a", {3, 2}, DType::kFloat32}, {"b", {4}, DType::kInt32},
                                     {"missing", {7}, DType::kFloat32}, {"ok", {5}, DType::kFloat32}};
  std::string what = what_of([&] { check_arrays(found, expected, "/x/step-00000040/model.h5"); });
  EXPECT_NE(what.find("/x/step-00000040/model.h5"), std::string::npos) << what;
  EXPECT_NE(what.find("4 problems"), std::string::npos) << what;
  EXPECT_NE(what.find("'a' is float32 [2, 3] in the file, the model has float32 [3, 2]"), std::string::npos) << what;
  EXPECT_NE(what.find("'b' is int64 [4]"), std::string::npos) << what;
  EXPECT_NE(what.find("missing 'missing'"), std::string::npos) << what;
  EXPECT_NE(what.find("unexpected 'extra'"), std::string::npos) << what;
  EXPECT_EQ(what.find("'ok'"), std::string::npos) << what;
  EXPECT_NO_THROW(check_arrays({found[3]}, {expected[3]}, "f"));
}

TEST(Hdf5, EveryDTypeAndOddShapeRoundTripsExactly) {
  TempDir tmp;
  std::vector<NamedArray> arrays;
  uint32_t seed = 0;
  for (DType d : {DType::kFloat32, DType::kBFloat16, DType::kFloat64, DType::kInt64, DType::kInt32, DType::kUInt8}) {
    std::string t = dtype_name(d);
    arrays.push_back(pattern("scalar." + t, {}, d, ++seed));
    arrays.push_back(pattern("empty." + t, {0}, d, ++seed));
    arrays.push_back(pattern("empty3d." + t, {3, 0, 2}, d, ++seed));
    arrays.push_back(pattern("one." + t, {1}, d, ++seed));
    arrays.push_back(pattern("cube." + t, {3, 5, 7}, d, ++seed));
    arrays.push_back(pattern("encoder.layers.0." + t, {1000, 3}, d, ++seed));  // several chunks
    arrays.push_back(pattern("adam_m/encoder.layers.0." + t, {17}, d, ++seed));
  }
  // bf16 bit patterns that a float conversion would change: NaN payloads, -0, denormals, infinities.
  NamedArray bf16 = NamedArray::copy_of("bf16.special", {6}, DType::kBFloat16,
                                        std::vector<uint16_t>{0x7fc1, 0xffff, 0x8000, 0x0001, 0x7f80, 0xff81}.data());
  arrays.push_back(bf16);
  {
    dgr::data::h5::File file = dgr::data::h5::File::create(tmp / "a.h5");
    dgr::data::h5::WriteOptions small;
    small.chunk_bytes = 512;  // forces many chunks, also over the middle dimension
    for (const auto& a : arrays) file.write_array(a, small);
    file.close();
  }
  dgr::data::h5::File file = dgr::data::h5::File::open_read(tmp / "a.h5");
  expect_same(sorted(arrays), file.read_arrays());
  EXPECT_EQ(file.read_array("bf16.special").values<uint16_t>(),
            (std::vector<uint16_t>{0x7fc1, 0xffff, 0x8000, 0x0001, 0x7f80, 0xff81}));
  EXPECT_EQ(file.string_attr("dtype", "bf16.special"), "bfloat16");
  std::vector<std::string> in_group = file.array_names("adam_m");
  EXPECT_EQ(in_group.size(), 6u);
  EXPECT_EQ(in_group[0], "encoder.layers.0.bfloat16");
}

TEST(Hdf5, WriteRejectsWrongByteCountAndDuplicates) {
  TempDir tmp;
  dgr::data::h5::File file = dgr::data::h5::File::create(tmp / "a.h5");
  NamedArray a = pattern("w", {4}, DType::kFloat32, 1);
  a.bytes.pop_back();
  std::string what = what_of([&] { file.write_array(a); });
  EXPECT_NE(what.find("'w' has 15 bytes, but shape [4] of float32 needs 16"), std::string::npos) << what;
  file.write_array(pattern("w", {4}, DType::kFloat32, 1));
  what = what_of([&] { file.write_array(pattern("w", {4}, DType::kFloat32, 1)); });
  EXPECT_NE(what.find("H5Dcreate2 failed for 'w'"), std::string::npos) << what;
  EXPECT_NE(what.find(tmp / "a.h5"), std::string::npos) << what;
}

TEST(Hdf5, Fletcher32CatchesAFlippedDataByte) {
  TempDir tmp;
  NamedArray a = floats("w", {64, 64}, 1000.0f);
  {
    dgr::data::h5::File file = dgr::data::h5::File::create(tmp / "a.h5");
    file.write_array(a);
    file.close();
  }
  std::string raw = dgr::files::read_all(tmp / "a.h5");
  size_t at = raw.find(std::string(a.bytes.begin() + 400, a.bytes.begin() + 432));
  ASSERT_NE(at, std::string::npos) << "data not found in the file (compressed?)";
  flip_byte(tmp / "a.h5", at + 5);
  dgr::data::h5::File file = dgr::data::h5::File::open_read(tmp / "a.h5");
  std::string what = what_of([&] { file.read_array("w"); });
  EXPECT_NE(what.find("dataset 'w': the chunk at [0, 0] fails its Fletcher-32 checksum"), std::string::npos) << what;
  EXPECT_NE(what.find(tmp / "a.h5"), std::string::npos) << what;
  // HDF5's own filter agrees that the chunk is damaged.
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t f = H5Fopen((tmp / "a.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, "w", H5P_DEFAULT);
  std::vector<float> out(64 * 64);
  EXPECT_LT(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), 0);
  H5Dclose(d);
  H5Fclose(f);
}

TEST(Hdf5, Fletcher32IsHdf5s) {
  std::vector<uint8_t> bytes(70000);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  for (size_t n : {1, 2, 3, 4, 511, 512, 513, 719, 720, 721, 1000, 4097, 65535, 70000}) {
    EXPECT_EQ(dgr::data::h5::fletcher32(bytes.data(), n), H5_checksum_fletcher32(bytes.data(), n)) << n;
  }
  // Sums that are multiples of 65535 (HDF5 writes 0xffff, not 0), and all zeros (0).
  for (uint8_t fill : {0x00, 0xff, 0x01}) {
    std::vector<uint8_t> same(4096, fill);
    for (size_t n : {1, 2, 3, 1024, 4095, 4096}) {
      EXPECT_EQ(dgr::data::h5::fletcher32(same.data(), n), H5_checksum_fletcher32(same.data(), n)) << int(fill) << " " << n;
    }
  }
}

// dgr writes chunks itself (Note [Direct chunk I/O]); HDF5's own reader must accept them and see the same data.
TEST(Hdf5, Hdf5sOwnReaderAcceptsTheChunks) {
  TempDir tmp;
  std::vector<NamedArray> arrays = {pattern("f", {1000, 3}, DType::kFloat32, 1), pattern("b", {3, 5, 7}, DType::kUInt8, 2),
                                    pattern("h", {17, 9}, DType::kBFloat16, 3), pattern("zero", {50}, DType::kInt64, 0),
                                    pattern("d", {2, 2, 2, 3}, DType::kFloat64, 4)};
  std::fill(arrays[3].bytes.begin(), arrays[3].bytes.end(), 0);
  {
    dgr::data::h5::File file = dgr::data::h5::File::create(tmp / "a.h5");
    dgr::data::h5::WriteOptions small;
    small.chunk_bytes = 100;  // edge chunks everywhere, splits inside the middle dimensions
    for (const auto& a : arrays) file.write_array(a, small);
    file.close();
  }
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t f = H5Fopen((tmp / "a.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  for (const auto& a : arrays) {
    hid_t d = H5Dopen2(f, a.name.c_str(), H5P_DEFAULT);
    hid_t type = H5Dget_type(d);
    std::vector<uint8_t> out(a.bytes.size());
    EXPECT_GE(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), 0) << a.name;
    EXPECT_TRUE(out == a.bytes) << a.name;
    hid_t dcpl = H5Dget_create_plist(d);
    EXPECT_EQ(H5Pget_layout(dcpl), H5D_CHUNKED) << a.name;
    EXPECT_EQ(H5Pget_nfilters(dcpl), 1) << a.name;
    H5Pclose(dcpl);
    H5Tclose(type);
    H5Dclose(d);
  }
  H5Fclose(f);
}

TEST(Hdf5, Md5CatchesAFlippedScalar) {
  TempDir tmp;
  NamedArray s = NamedArray::copy_of("step", {}, DType::kInt64, std::vector<int64_t>{0x1122334455667788}.data());
  {
    dgr::data::h5::File file = dgr::data::h5::File::create(tmp / "a.h5");
    file.write_array(s);
    file.close();
  }
  std::string raw = dgr::files::read_all(tmp / "a.h5");
  size_t at = raw.find(std::string(s.bytes.begin(), s.bytes.end()));
  ASSERT_NE(at, std::string::npos);
  flip_byte(tmp / "a.h5", at + 2);
  dgr::data::h5::File file = dgr::data::h5::File::open_read(tmp / "a.h5");
  std::string what = what_of([&] { file.read_array("step"); });
  EXPECT_NE(what.find("md5"), std::string::npos) << what;
}

TEST(Hdf5, AttributesIncludingLongStrings) {
  TempDir tmp;
  std::string long_text(100000, 'x');
  {
    dgr::data::h5::File file = dgr::data::h5::File::create(tmp / "a.h5");
    file.set_string_attr("name", "dgr \xc3\xa9t\xc3\xa9");
    file.set_string_attr("long", long_text);
    file.set_int_attr("n", -42);
    file.close();
  }
  dgr::data::h5::File file = dgr::data::h5::File::open_read(tmp / "a.h5");
  EXPECT_EQ(file.string_attr("name"), "dgr \xc3\xa9t\xc3\xa9");
  EXPECT_EQ(file.string_attr("long"), long_text);
  EXPECT_EQ(file.int_attr("n"), -42);
  EXPECT_FALSE(file.string_attr("absent").has_value());
  EXPECT_THROW(file.int_attr("name"), dgr::CheckpointError);
}

TEST(Hdf5, MissingAndTruncatedFilesNameThePath) {
  TempDir tmp;
  std::string what = what_of([&] { dgr::data::h5::File::open_read(tmp / "nope.h5"); });
  EXPECT_NE(what.find(tmp / "nope.h5"), std::string::npos) << what;
  {
    dgr::data::h5::File file = dgr::data::h5::File::create(tmp / "a.h5");
    file.write_array(floats("w", {100000}, 0));
    file.close();
  }
  fs::resize_file(tmp / "a.h5", fs::file_size(tmp / "a.h5") / 2);
  what = what_of([&] {
    dgr::data::h5::File file = dgr::data::h5::File::open_read(tmp / "a.h5");
    file.read_array("w");
  });
  EXPECT_NE(what.find(tmp / "a.h5"), std::string::npos) << what;
}

TEST(StagingPool, HandsBackBuffersOfTheSameSizeOnly) {
  StagingPool pool;
  NamedArray a = pool.take("a", {1024, 1024}, DType::kFloat32);  // nothing pooled yet: fresh, zeroed
  ASSERT_EQ(a.bytes.size(), size_t{4} << 20);
  EXPECT_EQ(a.bytes[12345], 0);
  NamedArray b = pool.take("b", {3}, DType::kInt64);
  a.bytes[12345] = 7;
  const uint8_t* a_data = a.bytes.data();
  std::vector<NamedArray> used;
  used.push_back(std::move(a));
  used.push_back(std::move(b));
  pool.give_back(std::move(used));
  EXPECT_EQ(pool.pooled_bytes(), (size_t{4} << 20) + 24);

  NamedArray c = pool.take("c", {2048, 512}, DType::kFloat32);  // same bytes, other shape: the same buffer
  EXPECT_EQ(c.bytes.data(), a_data);
  EXPECT_EQ(c.name, "c");
  EXPECT_EQ(c.shape, (std::vector<int64_t>{2048, 512}));
  EXPECT_EQ(c.bytes.size(), size_t{4} << 20);
  NamedArray d = pool.take("d", {5}, DType::kInt64);  // no 40-byte buffer: a fresh one
  EXPECT_EQ(d.bytes.size(), 40u);
  EXPECT_EQ(pool.pooled_bytes(), 24u);

  int64_t three[3] = {1, -2, 3};
  NamedArray e = pool.copy_of("e", {3}, DType::kInt64, three);
  EXPECT_EQ(e.values<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(pool.pooled_bytes(), 0u);

  std::vector<NamedArray> second;
  second.push_back(std::move(d));
  pool.give_back(std::move(second));  // replaces what was pooled: one save's worth at most
  EXPECT_EQ(pool.pooled_bytes(), 40u);
}


ExportInfo export_info() {
  ExportInfo info;
  info.model_config_json = json{{"d_model", 256}, {"layers", 4}}.dump();
  info.tokenizer_id = "t5-small";
  info.tokenizer_sha256 = std::string(64, 'a');
  info.index_id = "debian-docids-v1";
  info.index_sha256 = std::string(64, 'b');
  return info;
}

TEST(Export, RoundTripAndLayout) {
  TempDir tmp;
  std::vector<NamedArray> weights = {floats("encoder.layers.0.weight", {4, 3}, 1), pattern("embed.bf16", {5, 2}, DType::kBFloat16, 2),
                                     pattern("scale", {}, DType::kFloat32, 3)};
  write_export(tmp / "model.h5", weights, export_info());
  for (const auto& entry : fs::directory_iterator(tmp.path)) {
    EXPECT_EQ(entry.path().filename(), "model.h5") << "left over: " << entry.path();
  }
  ExportedModel m = read_export(tmp / "model.h5");
  expect_same(sorted(weights), m.weights);
  EXPECT_EQ(json::parse(m.info.model_config_json)["layers"], 4);
  EXPECT_EQ(m.info.tokenizer_id, "t5-small");
  EXPECT_EQ(m.info.tokenizer_sha256, std::string(64, 'a'));
  EXPECT_EQ(m.info.index_id, "debian-docids-v1");
  EXPECT_EQ(m.info.index_sha256, std::string(64, 'b'));
  EXPECT_FALSE(m.dgr_version.empty());

  // h5py (Debian's python3-h5py lives under /usr/bin/python3) sees the same weights and attributes.
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") == 0) {
    std::string script = tmp / "read.py";
    std::ofstream(script) << "import h5py, hashlib, sys\n"
                             "f = h5py.File(sys.argv[1], 'r')\n"
                             "print('tokenizer_id=' + f.attrs['tokenizer_id'])\n"
                             "for k in sorted(f['weights']):\n"
                             "    d = f['weights'][k]\n"
                             "    print(k, d.attrs['dtype'], d.shape, hashlib.md5(d[()].tobytes()).hexdigest())\n";
    std::string out_path = tmp / "h5py.txt";
    ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + tmp / "model.h5" + " > " + out_path).c_str()), 0);
    std::string out = dgr::files::read_all(out_path);
    EXPECT_NE(out.find("tokenizer_id=t5-small"), std::string::npos) << out;
    for (const auto& w : weights) {
      std::string shape = w.shape.empty() ? "()" : w.shape.size() == 1 ? fmt::format("({},)", w.shape[0])
                                                                       : fmt::format("({})", fmt::join(w.shape, ", "));
      std::string line = fmt::format("{} {} {} {}", w.name, dtype_name(w.dtype), shape,
                                     dgr::files::md5_hex(std::string(w.bytes.begin(), w.bytes.end())));
      EXPECT_NE(out.find(line), std::string::npos) << "missing: " << line << "\n" << out;
    }
  }

  if (std::system("command -v h5ls >/dev/null 2>&1") != 0) GTEST_SKIP() << "h5ls not installed (hdf5-tools)";
  std::string listing_path = tmp / "h5ls.txt";
  ASSERT_EQ(std::system(("h5ls -r " + tmp / "model.h5" + " > " + listing_path).c_str()), 0);
  std::string listing = dgr::files::read_all(listing_path);
  EXPECT_NE(listing.find("/weights/encoder.layers.0.weight Dataset {4, 3}"), std::string::npos) << listing;
  EXPECT_NE(listing.find("/weights/embed.bf16      Dataset {5, 2}"), std::string::npos) << listing;
  EXPECT_NE(listing.find("/weights/scale           Dataset {SCALAR}"), std::string::npos) << listing;
}

TEST(Export, NoWeightsIsAValidFile) {
  TempDir tmp;
  write_export(tmp / "empty.h5", {}, export_info());
  EXPECT_TRUE(read_export(tmp / "empty.h5").weights.empty());
}

TEST(Export, RejectsOtherFilesAndSlashedNames) {
  TempDir tmp;
  Store store(options_for(tmp.path, false), world());
  store.save(request_for(1));
  std::string what = what_of([&] { read_export(tmp / "step-00000001/model.h5"); });
  EXPECT_NE(what.find("not a dgr export file"), std::string::npos) << what;
  what = what_of([&] { write_export(tmp / "x.h5", {pattern("a/b", {1}, DType::kUInt8, 1)}, export_info()); });
  EXPECT_NE(what.find("contains '/'"), std::string::npos) << what;
  EXPECT_FALSE(fs::exists(tmp / "x.h5"));
}

}  // namespace
