// checkpoints/ in one process: the step-directory protocol of checkpoints::Store (commit, prune, resume,
// fallback past damaged steps, recycled buffers, overlapped copies, failed writes).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "checkpoints/array.h"
#include "checkpoints/store.h"
#include "common/files.h"
#include "tests/checkpoints_test_util.h"

namespace fs = std::filesystem;
using namespace dgr::checkpoints;
using namespace dgr_checkpoints_test;
using json = nlohmann::json;

namespace {

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

// Rewrites one key of a step's meta.json.
void edit_meta(const std::string& step_dir, const char* key, int value) {
  json meta = json::parse(dgr::files::read_all(step_dir + "/meta.json"));
  meta[key] = value;
  std::ofstream(step_dir + "/meta.json") << meta.dump(2);
}

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
      {"unknown format version", [](const std::string& d) { edit_meta(d, "format_version", 99); }, "meta.json",
       "unknown format version 99"},
      {"meta.json edited", [](const std::string& d) { edit_meta(d, "step", 41); }, "meta.json", "does not match"},
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

}  // namespace
