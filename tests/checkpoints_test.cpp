// checkpoints/ in one process: HDF5 round trips of every dtype and odd shapes, Fletcher-32 really on, the
// step-directory protocol (commit, prune, resume, fallback past damaged steps), failed writes, export files.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "checkpoints/array.h"
#include "checkpoints/export.h"
#include "checkpoints/hdf5_file.h"
#include "checkpoints/store.h"
#include "common/files.h"
#include "common/log.h"
#include "common/world.h"

// HDF5's own Fletcher-32 (exported by libhdf5, declared only in its private headers): the reference.
extern "C" uint32_t H5_checksum_fletcher32(const void* data, size_t len);

namespace fs = std::filesystem;
using namespace dgr::checkpoints;
using json = nlohmann::json;

namespace {

const dgr::World& world() {
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
NamedArray pattern(const std::string& name, std::vector<int64_t> shape, DType dtype, uint32_t seed) {
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
NamedArray floats(const std::string& name, std::vector<int64_t> shape, float offset) {
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

void expect_same(const std::vector<NamedArray>& expected, const std::vector<NamedArray>& found) {
  ASSERT_EQ(expected.size(), found.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(expected[i].name, found[i].name);
    EXPECT_EQ(expected[i].shape, found[i].shape) << expected[i].name;
    EXPECT_EQ(expected[i].dtype, found[i].dtype) << expected[i].name;
    EXPECT_TRUE(expected[i].bytes == found[i].bytes) << expected[i].name << ": bytes differ";
  }
}

std::vector<NamedArray> sorted(std::vector<NamedArray> arrays) {
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

std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dgr::CheckpointError& e) {
    return e.what();
  }
  return "<no CheckpointError>";
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

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
    h5::File file = h5::File::create(tmp / "a.h5");
    h5::WriteOptions small;
    small.chunk_bytes = 512;  // forces many chunks, also over the middle dimension
    for (const auto& a : arrays) file.write_array(a, small);
    file.close();
  }
  h5::File file = h5::File::open_read(tmp / "a.h5");
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
  h5::File file = h5::File::create(tmp / "a.h5");
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
    h5::File file = h5::File::create(tmp / "a.h5");
    file.write_array(a);
    file.close();
  }
  std::string raw = dgr::files::read_all(tmp / "a.h5");
  size_t at = raw.find(std::string(a.bytes.begin() + 400, a.bytes.begin() + 432));
  ASSERT_NE(at, std::string::npos) << "data not found in the file (compressed?)";
  flip_byte(tmp / "a.h5", at + 5);
  h5::File file = h5::File::open_read(tmp / "a.h5");
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
    EXPECT_EQ(h5::fletcher32(bytes.data(), n), H5_checksum_fletcher32(bytes.data(), n)) << n;
  }
  // Sums that are multiples of 65535 (HDF5 writes 0xffff, not 0), and all zeros (0).
  for (uint8_t fill : {0x00, 0xff, 0x01}) {
    std::vector<uint8_t> same(4096, fill);
    for (size_t n : {1, 2, 3, 1024, 4095, 4096}) {
      EXPECT_EQ(h5::fletcher32(same.data(), n), H5_checksum_fletcher32(same.data(), n)) << int(fill) << " " << n;
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
    h5::File file = h5::File::create(tmp / "a.h5");
    h5::WriteOptions small;
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
    h5::File file = h5::File::create(tmp / "a.h5");
    file.write_array(s);
    file.close();
  }
  std::string raw = dgr::files::read_all(tmp / "a.h5");
  size_t at = raw.find(std::string(s.bytes.begin(), s.bytes.end()));
  ASSERT_NE(at, std::string::npos);
  flip_byte(tmp / "a.h5", at + 2);
  h5::File file = h5::File::open_read(tmp / "a.h5");
  std::string what = what_of([&] { file.read_array("step"); });
  EXPECT_NE(what.find("md5"), std::string::npos) << what;
}

TEST(Hdf5, AttributesIncludingLongStrings) {
  TempDir tmp;
  std::string long_text(100000, 'x');
  {
    h5::File file = h5::File::create(tmp / "a.h5");
    file.set_string_attr("name", "dgr \xc3\xa9t\xc3\xa9");
    file.set_string_attr("long", long_text);
    file.set_int_attr("n", -42);
    file.close();
  }
  h5::File file = h5::File::open_read(tmp / "a.h5");
  EXPECT_EQ(file.string_attr("name"), "dgr \xc3\xa9t\xc3\xa9");
  EXPECT_EQ(file.string_attr("long"), long_text);
  EXPECT_EQ(file.int_attr("n"), -42);
  EXPECT_FALSE(file.string_attr("absent").has_value());
  EXPECT_THROW(file.int_attr("name"), dgr::CheckpointError);
}

TEST(Hdf5, MissingAndTruncatedFilesNameThePath) {
  TempDir tmp;
  std::string what = what_of([&] { h5::File::open_read(tmp / "nope.h5"); });
  EXPECT_NE(what.find(tmp / "nope.h5"), std::string::npos) << what;
  {
    h5::File file = h5::File::create(tmp / "a.h5");
    file.write_array(floats("w", {100000}, 0));
    file.close();
  }
  fs::resize_file(tmp / "a.h5", fs::file_size(tmp / "a.h5") / 2);
  what = what_of([&] {
    h5::File file = h5::File::open_read(tmp / "a.h5");
    file.read_array("w");
  });
  EXPECT_NE(what.find(tmp / "a.h5"), std::string::npos) << what;
}

// ---------------------------------------------------------------------------------------------------------
// Store

StoreOptions options_for(const std::string& dir, bool async = true, int keep_last = 3) {
  StoreOptions o;
  o.dir = dir;
  o.async = async;
  o.keep_last = keep_last;
  return o;
}

SaveRequest request_for(int64_t step, size_t elements = 1000) {
  SaveRequest r;
  r.step = step;
  r.replicated = {floats("encoder.weight", {static_cast<int64_t>(elements)}, static_cast<float>(step)),
                  pattern("adam_m/encoder.weight", {static_cast<int64_t>(elements)}, DType::kFloat32, step),
                  pattern("adam_step", {}, DType::kInt64, step),
                  pattern("embed.bf16", {7, 3}, DType::kBFloat16, step)};
  r.per_rank = {pattern("rng.cpu", {5056}, DType::kUInt8, step), pattern("rng.cuda", {0}, DType::kUInt8, step)};
  r.config_json = json{{"model", {{"d_model", 256}}}, {"lr", 3e-4}}.dump();
  r.state_json = json{{"epoch", 2}, {"permutation_seed", 7}, {"lr_step", step}}.dump();
  r.rank_state_json = json{{"cursors", {step, step + 1}}}.dump();
  return r;
}

void expect_is_step(const LoadedCheckpoint& c, int64_t step) {
  SaveRequest r = request_for(step);
  EXPECT_EQ(c.step, step);
  EXPECT_EQ(c.world_size, 1);
  expect_same(sorted(r.replicated), c.replicated);
  expect_same(sorted(r.per_rank), c.per_rank);
  EXPECT_EQ(json::parse(c.config_json), json::parse(r.config_json));
  EXPECT_EQ(json::parse(c.state_json), json::parse(r.state_json));
  EXPECT_EQ(json::parse(c.rank_state_json), json::parse(r.rank_state_json));
}

TEST(Store, SaveAndLoadRoundTripSyncAndAsync) {
  for (bool async : {false, true}) {
    TempDir tmp;
    Store store(options_for(tmp.path, async), world());
    store.save(request_for(10));
    EXPECT_EQ(store.pending(), async);
    store.wait();
    EXPECT_FALSE(store.pending());
    std::string step_dir = tmp / "step-00000010";
    for (const char* f : {"model.h5", "rank-00000.h5", "meta.json", "COMMITTED"}) {
      EXPECT_TRUE(fs::exists(step_dir + "/" + f)) << f;
    }
    EXPECT_FALSE(fs::exists(step_dir + ".tmp"));
    json meta = json::parse(dgr::files::read_all(step_dir + "/meta.json"));
    EXPECT_EQ(meta["dgr_format"], "dgr-checkpoint");
    EXPECT_EQ(meta["format_version"], 1);
    EXPECT_EQ(meta["step"], 10);
    EXPECT_EQ(meta["world_size"], 1);
    EXPECT_FALSE(meta["dgr_version"].get<std::string>().empty());
    EXPECT_EQ(meta["config"]["model"]["d_model"], 256);
    EXPECT_EQ(meta["state"]["permutation_seed"], 7);
    ASSERT_EQ(meta["files"].size(), 2u);
    for (const auto& f : meta["files"]) {
      std::string path = step_dir + "/" + f["name"].get<std::string>();
      EXPECT_EQ(f["sha256"], dgr::files::sha256_file(path));
      EXPECT_EQ(f["bytes"], fs::file_size(path));
    }
    json marker = json::parse(dgr::files::read_all(step_dir + "/COMMITTED"));
    EXPECT_EQ(marker["meta_sha256"], dgr::files::sha256_file(step_dir + "/meta.json"));

    std::optional<LoadedCheckpoint> loaded = store.load_latest();
    ASSERT_TRUE(loaded.has_value());
    expect_is_step(*loaded, 10);
    expect_is_step(load_step(step_dir, 0, 1), 10);
    LoadedCheckpoint replicated_only = load_step(step_dir, -1, 0);
    EXPECT_TRUE(replicated_only.per_rank.empty());
    EXPECT_EQ(replicated_only.replicated.size(), 4u);
  }
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

TEST(Store, RecycledBuffersHoldTheNewValues) {
  // The trainer's path: every save's arrays come from store.staging(); the writer gives them back once the
  // files are written, and the next save's copies reuse them. Every step must hold its own values.
  for (bool async : {false, true}) {
    TempDir tmp;
    StoreOptions o = options_for(tmp.path, async);
    o.keep_last = 0;
    Store store(o, world());
    const uint8_t* first_data = nullptr;
    for (int64_t step = 1; step <= 3; ++step) {
      while (store.writing()) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // buffers are back
      SaveRequest r;
      r.step = step;
      NamedArray w = floats("model/w", {512, 1024}, static_cast<float>(step) * 1000.0f);
      r.replicated.push_back(store.staging().copy_of(w.name, w.shape, w.dtype, w.bytes.data()));
      if (step == 1) first_data = r.replicated.back().bytes.data();
      else EXPECT_EQ(r.replicated.back().bytes.data(), first_data) << "step " << step << " reuses step 1's buffer";
      int64_t cursor = step * 10;
      r.per_rank.push_back(store.staging().copy_of("cursor", {}, DType::kInt64, &cursor));
      store.save(std::move(r));  // async: commits the previous step, writes this one in the background
    }
    store.wait();
    EXPECT_GT(store.staging().pooled_bytes(), size_t{2} << 20);
    for (int64_t step = 1; step <= 3; ++step) {
      LoadedCheckpoint c = load_step(tmp / step_dir_name(step), 0, 1);
      ASSERT_EQ(c.replicated.size(), 1u);
      EXPECT_EQ(c.replicated[0].bytes, floats("model/w", {512, 1024}, static_cast<float>(step) * 1000.0f).bytes)
          << "step " << step << (async ? " async" : " sync");
      ASSERT_EQ(c.per_rank.size(), 1u);
      EXPECT_EQ(c.per_rank[0].values<int64_t>().at(0), step * 10);
    }
  }
}

TEST(Store, SourcesAreCopiedBeforeWaitForCopiesReturns) {
  // Note [Overlapped copy]: the writer copies replicated_sources; once wait_for_copies() returns the caller
  // may change them (its next optimizer step), and the checkpoint keeps the values they had at save().
  for (bool async : {false, true}) {
    TempDir tmp;
    Store store(options_for(tmp.path, async), world());
    NamedArray weights = floats("model/w", {256, 1024}, 5.0f);
    NamedArray bias = floats("model/b", {7}, -3.0f);
    std::vector<uint8_t> live = weights.bytes;  // "the parameter", changed after the copy
    SaveRequest r;
    r.step = 4;
    r.replicated.push_back(bias);
    r.replicated_sources.push_back({weights.name, weights.shape, weights.dtype, live.data()});
    r.per_rank.push_back(floats("rng", {3}, 1.0f));
    store.save(std::move(r));
    store.wait_for_copies();
    std::fill(live.begin(), live.end(), uint8_t{0xff});
    store.wait();
    store.wait_for_copies();  // nothing pending: returns at once
    LoadedCheckpoint c = load_step(tmp / step_dir_name(4), 0, 1);
    ASSERT_EQ(c.replicated.size(), 2u);
    EXPECT_EQ(c.replicated[0].name, "model/b");
    EXPECT_EQ(c.replicated[0].bytes, bias.bytes);
    EXPECT_EQ(c.replicated[1].name, "model/w");
    EXPECT_EQ(c.replicated[1].shape, weights.shape);
    EXPECT_EQ(c.replicated[1].bytes, weights.bytes) << (async ? "async" : "sync");
  }
}

TEST(Store, ASourceNamedLikeAnArrayIsRejected) {
  TempDir tmp;
  Store store(options_for(tmp.path), world());
  NamedArray w = floats("model/w", {4}, 0.0f);
  SaveRequest r;
  r.step = 1;
  r.replicated.push_back(w);
  r.replicated_sources.push_back({"model/w", {4}, DType::kFloat32, w.bytes.data()});
  try {
    store.save(std::move(r));
    FAIL() << "expected a CheckpointError";
  } catch (const dgr::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'model/w' appears twice"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp / "step-00000001"));
}

TEST(Store, EmptyDirectoryLoadsNothing) {
  TempDir tmp;
  Store store(options_for(tmp / "new/sub"), world());
  EXPECT_TRUE(fs::is_directory(tmp / "new/sub"));
  EXPECT_FALSE(store.load_latest().has_value());
}

TEST(Store, KeepsTheLastKCommitted) {
  TempDir tmp;
  Store store(options_for(tmp.path, true, 2), world());
  for (int64_t step : {10, 20, 30, 40, 50}) store.save(request_for(step));
  store.wait();
  EXPECT_EQ(committed_steps(tmp.path), (std::vector<int64_t>{40, 50}));
  expect_is_step(*store.load_latest(), 50);

  TempDir all;
  Store keep_all(options_for(all.path, false, 0), world());
  for (int64_t step : {1, 2, 3, 4}) keep_all.save(request_for(step));
  EXPECT_EQ(committed_steps(all.path), (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST(Store, NewestCommittedWinsAndUncommittedStepsAreIgnored) {
  TempDir tmp;
  Store store(options_for(tmp.path, false, 5), world());
  store.save(request_for(20));
  store.save(request_for(30));
  // A newer step that never finished: a .tmp directory, and a step directory without its marker.
  fs::copy(tmp / "step-00000030", tmp / "step-00000050.tmp");
  fs::copy(tmp / "step-00000030", tmp / "step-00000040");
  fs::remove(tmp / "step-00000040/COMMITTED");
  LogCapture log;
  EXPECT_EQ(committed_steps(tmp.path), (std::vector<int64_t>{20, 30}));
  expect_is_step(*store.load_latest(), 30);
  EXPECT_NE(log.str().find("step-00000040: no COMMITTED marker"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("step-00000050.tmp: a save that never finished"), std::string::npos) << log.str();
  std::string what = what_of([&] { load_step(tmp / "step-00000040", 0, 1); });
  EXPECT_NE(what.find("step-00000040/COMMITTED: missing"), std::string::npos) << what;
  // The next commit removes the stale .tmp, but leaves the uncommitted step for the user to inspect.
  store.save(request_for(60));
  EXPECT_FALSE(fs::exists(tmp / "step-00000050.tmp"));
  EXPECT_TRUE(fs::exists(tmp / "step-00000040"));
}

// Each way of damaging the newest step: load_latest warns and takes the previous one; loading the damaged
// one directly is a DamagedCheckpointError naming the file and saying what to do.
struct Damage {
  const char* name;
  std::function<void(const std::string& step_dir)> apply;
  const char* file_in_message;
  const char* phrase;
};

TEST(Store, DamagedNewestFallsBackToThePreviousOne) {
  std::vector<Damage> damages = {
      {"flipped data byte",
       [](const std::string& d) { flip_byte(d + "/model.h5", fs::file_size(d + "/model.h5") / 2); }, "model.h5",
       "sha256"},
      {"truncated model", [](const std::string& d) { fs::resize_file(d + "/model.h5", fs::file_size(d + "/model.h5") - 1000); },
       "model.h5", "truncated"},
      {"truncated rank file", [](const std::string& d) { fs::resize_file(d + "/rank-00000.h5", 100); },
       "rank-00000.h5", "truncated"},
      {"marker removed", [](const std::string& d) { fs::remove(d + "/COMMITTED"); }, "COMMITTED", "never committed"},
      {"unknown format version",
       [](const std::string& d) {
         json meta = json::parse(dgr::files::read_all(d + "/meta.json"));
         meta["format_version"] = 99;
         std::ofstream(d + "/meta.json") << meta.dump(2);
       },
       "meta.json", "unknown format version 99"},
      {"meta.json edited",
       [](const std::string& d) {
         json meta = json::parse(dgr::files::read_all(d + "/meta.json"));
         meta["step"] = 41;
         std::ofstream(d + "/meta.json") << meta.dump(2);
       },
       "meta.json", "does not match"},
  };
  for (const Damage& damage : damages) {
    SCOPED_TRACE(damage.name);
    TempDir tmp;
    Store store(options_for(tmp.path, true, 3), world());
    store.save(request_for(30));
    store.save(request_for(40));
    store.wait();
    std::string newest = tmp / "step-00000040";
    damage.apply(newest);
    std::string what;
    try {
      load_step(newest, 0, 1);
      what = "<no error>";
    } catch (const DamagedCheckpointError& e) {
      what = e.what();
    }
    EXPECT_NE(what.find(newest + "/" + damage.file_in_message), std::string::npos) << what;
    EXPECT_NE(what.find(damage.phrase), std::string::npos) << what;
    EXPECT_NE(what.find("delete " + newest + " or resume from an earlier one"), std::string::npos) << what;
    LogCapture log;
    std::optional<LoadedCheckpoint> loaded = store.load_latest();
    ASSERT_TRUE(loaded.has_value());
    expect_is_step(*loaded, 30);
    if (std::string(damage.name) != "marker removed") {  // without its marker the step is simply not listed
      EXPECT_NE(log.str().find("skipping damaged checkpoint " + newest), std::string::npos) << log.str();
    }
  }
}

TEST(Store, EveryCommittedStepDamagedIsAnError) {
  TempDir tmp;
  Store store(options_for(tmp.path, false), world());
  store.save(request_for(1));
  fs::resize_file(tmp / "step-00000001/model.h5", 10);
  std::string what = what_of([&] { store.load_latest(); });
  EXPECT_NE(what.find("every committed checkpoint in " + tmp.path + " is damaged (step-00000001"), std::string::npos)
      << what;
}

TEST(Store, AnotherWorldSizeIsNotDamageButAClearError) {
  TempDir tmp;
  Store store(options_for(tmp.path, false), world());
  store.save(request_for(5));
  try {
    load_step(tmp / "step-00000005", 0, 4);
    FAIL() << "no error";
  } catch (const DamagedCheckpointError& e) {
    FAIL() << "reported as damage: " << e.what();
  } catch (const dgr::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("written by 1 ranks, this job has 4"), std::string::npos) << e.what();
  }
  EXPECT_EQ(load_step(tmp / "step-00000005", -1, 4).replicated.size(), 4u);  // the model alone loads anywhere
}

TEST(Store, SavingAStepAgainReplacesIt) {
  TempDir tmp;
  Store store(options_for(tmp.path, false), world());
  store.save(request_for(7));
  SaveRequest again = request_for(8);
  again.step = 7;
  store.save(std::move(again));
  LoadedCheckpoint c = load_step(tmp / "step-00000007", 0, 1);
  expect_same(sorted(request_for(8).replicated), c.replicated);
  EXPECT_FALSE(fs::exists(tmp / "step-00000007.old"));
}

TEST(Store, AsyncSaveReturnsAtOnceAndCommitsOnlyInWait) {
  TempDir tmp;
  StoreOptions o = options_for(tmp.path, true);
  o.test_hook = [](const std::string&, const std::string& array) {
    if (array.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(400));
  };
  Store store(o, world());
  auto t0 = std::chrono::steady_clock::now();
  store.save(request_for(1, 1 << 20));
  double save_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(save_s, 0.3) << "save() blocked on the write";
  EXPECT_TRUE(store.pending());
  EXPECT_TRUE(store.writing());
  while (store.writing()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(store.pending());
  EXPECT_FALSE(fs::exists(tmp / "step-00000001")) << "committed without wait()";
  store.wait();
  EXPECT_FALSE(store.pending());
  EXPECT_TRUE(fs::exists(tmp / "step-00000001/COMMITTED"));
}

TEST(Store, ASecondSaveWaitsForTheFirst) {
  TempDir tmp;
  StoreOptions o = options_for(tmp.path, true);
  std::atomic<int> files_started{0};
  o.test_hook = [&](const std::string& file, const std::string& array) {
    if (array.empty() && files_started++ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  };
  Store store(o, world());
  store.save(request_for(1));
  auto t0 = std::chrono::steady_clock::now();
  store.save(request_for(2));
  double second_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(second_s, 0.3);
  EXPECT_TRUE(fs::exists(tmp / "step-00000001/COMMITTED"));  // committed inside the second save()
  store.wait();
  expect_is_step(*store.load_latest(), 2);
}

TEST(Store, BadRequestsAreRejectedBeforeAnythingIsWritten) {
  TempDir tmp;
  Store store(options_for(tmp.path, true), world());
  SaveRequest dup = request_for(1);
  dup.replicated.push_back(dup.replicated[0]);
  EXPECT_NE(what_of([&] { store.save(std::move(dup)); }).find("'encoder.weight' appears twice"), std::string::npos);
  SaveRequest short_bytes = request_for(1);
  short_bytes.per_rank[0].bytes.resize(3);
  EXPECT_NE(what_of([&] { store.save(std::move(short_bytes)); }).find("'rng.cpu' has 3 bytes"), std::string::npos);
  SaveRequest bad_json = request_for(1);
  bad_json.config_json = "{not json";
  EXPECT_NE(what_of([&] { store.save(std::move(bad_json)); }).find("config_json is not valid JSON"), std::string::npos);
  EXPECT_FALSE(store.pending());
  EXPECT_TRUE(fs::is_empty(tmp.path));
}

TEST(Store, DirectoryThatIsAFileIsAClearError) {
  TempDir tmp;
  std::ofstream(tmp / "file") << "x";
  std::string what = what_of([&] { Store store(options_for(tmp / "file/ckpt"), world()); });
  EXPECT_NE(what.find("cannot create the checkpoint directory " + tmp / "file/ckpt"), std::string::npos) << what;
}

// Writes that really fail as root: RLIMIT_FSIZE makes write() return EFBIG past the limit (SIGXFSZ ignored).
struct FileSizeLimit {
  rlimit old{};
  sighandler_t old_handler;
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &old);
    old_handler = signal(SIGXFSZ, SIG_IGN);
    rlimit limit = old;
    limit.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
  }
};

TEST(Store, AFailedWriteIsAClearErrorAndThePreviousCheckpointStays) {
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "async" : "sync");
    TempDir tmp;
    Store store(options_for(tmp.path, async), world());
    store.save(request_for(10));
    store.wait();
    std::string before = dgr::files::sha256_file(tmp / "step-00000010/model.h5");
    std::string what;
    {
      FileSizeLimit limit(1 << 20);
      what = what_of([&] {
        store.save(request_for(20, 1 << 20));  // 4 MiB per array: past the limit
        store.wait();
      });
    }
    EXPECT_NE(what.find("checkpoint step 20 could not be written: rank 0:"), std::string::npos) << what;
    EXPECT_NE(what.find("step-00000020.tmp/model.h5"), std::string::npos) << what;
    EXPECT_NE(what.find("File too large"), std::string::npos) << what;
    EXPECT_NE(what.find("the last committed checkpoint " + tmp / "step-00000010 is intact"), std::string::npos) << what;
    EXPECT_FALSE(store.pending());
    EXPECT_FALSE(fs::exists(tmp / "step-00000020"));
    EXPECT_FALSE(fs::exists(tmp / "step-00000020.tmp"));
    EXPECT_EQ(dgr::files::sha256_file(tmp / "step-00000010/model.h5"), before);
    expect_is_step(*store.load_latest(), 10);
    store.save(request_for(30));  // the store is usable again once the cause is gone
    store.wait();
    expect_is_step(*store.load_latest(), 30);
  }
}

TEST(Store, AWriterExceptionIsReportedWithTheFile) {
  TempDir tmp;
  StoreOptions o = options_for(tmp.path, true);
  o.test_hook = [](const std::string& file, const std::string& array) {
    if (file.find("rank-00000.h5") != std::string::npos && array == "rng.cpu") fs::remove_all(fs::path(file).parent_path());
  };
  Store store(o, world());
  store.save(request_for(3));
  std::string what = what_of([&] { store.wait(); });
  EXPECT_NE(what.find("checkpoint step 3 could not be written"), std::string::npos) << what;
  EXPECT_NE(what.find("no earlier checkpoint was committed"), std::string::npos) << what;
  EXPECT_TRUE(committed_steps(tmp.path).empty());
}

// ---------------------------------------------------------------------------------------------------------
// Export

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
