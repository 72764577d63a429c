// checkpoints/ under mpiexec (2 and 3 ranks): every rank's part is written and read back by that rank,
// COMMITTED appears only once every rank finished, one rank's failure makes every rank throw, and ranks
// agree on which step to resume when one rank's file is damaged.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "checkpoints/store.h"
#include "common/world.h"

namespace fs = std::filesystem;
using namespace dgr::checkpoints;
using json = nlohmann::json;

namespace {

const dgr::World& world() { return *dgr::World::current(); }

// A directory shared by all ranks: rank 0 makes it, everyone learns its name; rank 0 removes it.
struct SharedTempDir {
  std::string path;
  SharedTempDir() {
    char name[256] = "/tmp/dgr_ckpt_mpi_XXXXXX";
    if (world().rank() == 0) ::mkdtemp(name);
    MPI_Bcast(name, sizeof(name), MPI_CHAR, 0, MPI_COMM_WORLD);
    path = name;
  }
  ~SharedTempDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    std::error_code ec;
    if (world().rank() == 0) fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& child) const { return path + "/" + child; }
};

// Values depend on step, rank, array and index, so a rank reading another rank's file cannot pass.
NamedArray values(const std::string& name, int64_t n, int64_t step, int rank) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = step * 1000000 + rank * 10000 + i * 7 + static_cast<int64_t>(name.size());
  return NamedArray::copy_of(name, {n}, DType::kInt64, v.data());
}

SaveRequest request_for(int64_t step) {
  int rank = world().rank();
  SaveRequest r;
  r.step = step;
  r.replicated = {values("encoder.weight", 1000, step, 0), values("adam_v/encoder.weight", 1000, step, 0)};
  r.per_rank = {values("rng.cpu", 100 + rank, step, rank), values("rng.cuda", 3, step, rank)};
  r.state_json = json{{"epoch", 1}, {"seed", 5}}.dump();
  r.rank_state_json = json{{"rank", rank}, {"cursor", step * 10 + rank}}.dump();
  return r;
}

void expect_is_step(const LoadedCheckpoint& c, int64_t step) {
  int rank = world().rank();
  EXPECT_EQ(c.step, step);
  EXPECT_EQ(c.world_size, world().size());
  ASSERT_EQ(c.replicated.size(), 2u);
  EXPECT_EQ(c.replicated[0].name, "adam_v/encoder.weight");
  EXPECT_EQ(c.replicated[0].bytes, values("adam_v/encoder.weight", 1000, step, 0).bytes);
  EXPECT_EQ(c.replicated[1].bytes, values("encoder.weight", 1000, step, 0).bytes);
  ASSERT_EQ(c.per_rank.size(), 2u);
  EXPECT_EQ(c.per_rank[0].name, "rng.cpu");
  EXPECT_EQ(c.per_rank[0].bytes, values("rng.cpu", 100 + rank, step, rank).bytes);
  EXPECT_EQ(c.per_rank[1].bytes, values("rng.cuda", 3, step, rank).bytes);
  EXPECT_EQ(json::parse(c.rank_state_json)["cursor"], step * 10 + rank);
}

StoreOptions options_for(const std::string& dir, bool async) {
  StoreOptions o;
  o.dir = dir;
  o.async = async;
  o.keep_last = 2;
  return o;
}

TEST(StoreMpi, EveryRankWritesAndReadsItsOwnPart) {
  for (bool async : {true, false}) {
    SharedTempDir tmp;
    Store store(options_for(tmp.path, async), world());
    for (int64_t step : {1, 2, 3}) store.save(request_for(step));
    store.wait();
    EXPECT_EQ(committed_steps(tmp.path), (std::vector<int64_t>{2, 3}));
    for (int r = 0; r < world().size(); ++r) {
      EXPECT_TRUE(fs::exists(tmp / ("step-00000003/rank-0000" + std::to_string(r) + ".h5"))) << r;
    }
    json meta = json::parse(std::ifstream(tmp / "step-00000003/meta.json"));
    EXPECT_EQ(meta["files"].size(), static_cast<size_t>(world().size()) + 1);
    EXPECT_EQ(meta["world_size"], world().size());
    std::optional<LoadedCheckpoint> loaded = store.load_latest();
    ASSERT_TRUE(loaded.has_value());
    expect_is_step(*loaded, 3);
  }
}

TEST(StoreMpi, CommittedOnlyAfterEveryRankFinished) {
  SharedTempDir tmp;
  const int slow = world().size() - 1;
  const std::string final_dir = tmp / "step-00000007";
  bool marker_seen_early = false;
  StoreOptions o = options_for(tmp.path, true);
  o.test_hook = [&](const std::string& file, const std::string& array) {
    if (world().rank() != slow || !array.empty()) return;
    // The last rank is slow: rank 0 has long finished its own files, yet must not commit.
    for (int i = 0; i < 15; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (fs::exists(final_dir) || fs::exists(final_dir + ".tmp/COMMITTED")) marker_seen_early = true;
    }
  };
  Store store(o, world());
  auto t0 = std::chrono::steady_clock::now();
  store.save(request_for(7));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(fs::exists(final_dir + "/COMMITTED"));
  store.wait();
  double waited_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_FALSE(marker_seen_early);
  EXPECT_TRUE(fs::exists(final_dir + "/COMMITTED"));
  EXPECT_GT(waited_s, 1.2) << "wait() returned before the slow rank finished";
  expect_is_step(*store.load_latest(), 7);
}

TEST(StoreMpi, AFailureOnOneRankMakesEveryRankThrow) {
  SharedTempDir tmp;
  const int failing = world().size() - 1;
  StoreOptions o = options_for(tmp.path, true);
  o.test_hook = [&](const std::string& file, const std::string& array) {
    // A real HDF5 failure: a directory where this rank's file must go.
    if (world().rank() == failing && array.empty() && file.find("step-00000002.tmp") != std::string::npos) {
      fs::create_directory(file);
    }
  };
  Store store(o, world());
  store.save(request_for(1));
  store.save(request_for(2));
  std::string what;
  try {
    store.wait();
  } catch (const dgr::CheckpointError& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("checkpoint step 2 could not be written: rank " + std::to_string(failing) + ":"), std::string::npos)
      << what;
  EXPECT_NE(what.find(fmt::format("step-00000002.tmp/rank-{:05d}.h5", failing)), std::string::npos) << what;
  EXPECT_NE(what.find("step-00000001 is intact"), std::string::npos) << what;
  EXPECT_FALSE(store.pending());
  EXPECT_EQ(committed_steps(tmp.path), (std::vector<int64_t>{1}));
  expect_is_step(*store.load_latest(), 1);
  store.save(request_for(3));
  store.wait();
  expect_is_step(*store.load_latest(), 3);
}

TEST(StoreMpi, RanksAgreeToFallBackWhenOneRankFileIsDamaged) {
  SharedTempDir tmp;
  Store store(options_for(tmp.path, false), world());
  store.save(request_for(4));
  store.save(request_for(5));
  const int victim = world().size() - 1;
  if (world().rank() == 0) {
    fs::resize_file(tmp / fmt::format("step-00000005/rank-{:05d}.h5", victim), 64);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  std::optional<LoadedCheckpoint> loaded = store.load_latest();
  ASSERT_TRUE(loaded.has_value());
  expect_is_step(*loaded, 4);  // on every rank, not only the victim
}

TEST(StoreMpi, RanksMustSaveTheSameStep) {
  SharedTempDir tmp;
  Store store(options_for(tmp.path, true), world());
  std::string what;
  try {
    store.save(request_for(world().rank() == 0 ? 10 : 11));
  } catch (const dgr::CheckpointError& e) {
    what = e.what();
  }
  EXPECT_NE(what.find("rank 1 saves step 11 while rank 0 saves step 10"), std::string::npos) << what;
  EXPECT_FALSE(store.pending());
}

}  // namespace
