// checkpoint_bench: in one run, for ~256 MiB of float32 arrays (64 x 4 MiB),
//   1. fwrite + fflush + fsync of the same bytes into one file vs Store::save in sync mode (throughput and
//      ratio; target >= 0.8x), with the two parts of a save measured alone: the HDF5 file (chunked,
//      Fletcher-32, fsync) and the sha256 of the file that meta.json records;
//   2. the time the training thread is blocked by an async save used as the trainer uses it: save() with
//      the arrays as sources, which the writer copies into recycled buffers (Note [Overlapped copy] in
//      checkpoints/store.cpp) during --fb-ms of forward + backward, wait_for_copies() before the optimizer
//      step, wait() (the commit) once the writer has finished — against a sync save including the host
//      copy a sync save needs (target <= 10%); also how long the write takes while training competes for
//      the cores, the training speed meanwhile, and the host copy into fresh vs recycled memory;
//   3. load time (load_step: sha256 of each file + HDF5 read + Fletcher-32 check of every chunk).
// Medians over --reps runs. Single process (MPI singleton):
//   build/bench/checkpoint_bench --dir /tmp/dgr_ckpt_bench --mib 256 --reps 5 --fb-ms 200
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "data/hdf5_file.h"
#include "checkpoints/store.h"
#include "common/files.h"
#include "common/error.h"
#include "common/log.h"
#include "common/world.h"

namespace fs = std::filesystem;
using namespace dgr::checkpoints;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A stand-in for training compute: passes over a 1 MiB buffer; returns the passes done in `seconds`.
int64_t train_for(double seconds, std::vector<float>& buffer) {
  double end = now_s() + seconds;
  int64_t passes = 0;
  while (now_s() < end) {
    for (float& x : buffer) x = x * 0.999f + 0.001f;
    ++passes;
  }
  return passes;
}

}  // namespace

int main(int argc, char** argv) {
  dgr::World world(&argc, &argv);
  if (std::getenv("DGR_BENCH_DEBUG")) {
    dgr::log::Options log_options;
    log_options.console_level = "debug";
    dgr::log::init(log_options, 0, 1);
  }
  std::string dir = "/tmp/dgr_ckpt_bench";
  int64_t mib = 256;
  int reps = 5;
  int fb_ms = 200;  // forward + backward of one step, during which the writer copies (dgr's bench step: ~220 ms)
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i];
    if (key == "--dir") dir = argv[i + 1];
    else if (key == "--mib") mib = std::stoll(argv[i + 1]);
    else if (key == "--reps") reps = std::stoi(argv[i + 1]);
    else if (key == "--fb-ms") fb_ms = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: checkpoint_bench [--dir DIR] [--mib N] [--reps N] [--fb-ms N]\n");
      return 2;
    }
  }
  try {
    fs::remove_all(dir);
    fs::create_directories(dir);
    // The model: 4 MiB arrays (like large weight matrices) plus a few small ones.
    const int64_t array_elements = 1 << 20;
    const int64_t num_arrays = std::max<int64_t>(1, mib / 4);
    std::vector<NamedArray> model;  // [array] the "device" copy
    uint64_t total_bytes = 0;
    for (int64_t a = 0; a < num_arrays; ++a) {
      std::vector<float> v(static_cast<size_t>(array_elements));
      for (int64_t i = 0; i < array_elements; ++i) v[static_cast<size_t>(i)] = static_cast<float>((i * 7 + a) % 1000) * 0.001f;
      model.push_back(NamedArray::copy_of(fmt::format("layers.{}.weight", a), {array_elements / 1024, 1024},
                                          DType::kFloat32, v.data()));
      total_bytes += model.back().bytes.size();
    }
    // The host copy the trainer makes of its tensors, into the store's recycled buffers.
    auto copy_request = [&](int64_t step, Store& store) {
      SaveRequest r;
      r.step = step;
      for (const auto& a : model) r.replicated.push_back(store.staging().copy_of(a.name, a.shape, a.dtype, a.bytes.data()));
      return r;
    };
    const double total_mib = static_cast<double>(total_bytes) / (1 << 20);

    // 1. Interleaved per repetition, so that all three see the same state of the disk: fwrite + fflush +
    // fsync of the same bytes; the HDF5 file alone (written, closed, fsync'ed) and then its sha256; a sync
    // Store::save (returns after the commit).
    std::vector<double> fwrite_s, hdf5_s, sha256_s, sync_s, copy_s, fresh_copy_s;
    StoreOptions sync_options;
    sync_options.dir = dir + "/sync";
    sync_options.keep_last = 1;
    sync_options.async = false;
    Store sync_store(sync_options, world);
    sync_store.save(copy_request(0, sync_store));  // a first save: the measured ones copy into recycled buffers
    for (int rep = 0; rep < reps; ++rep) {
      std::string path = dir + "/fwrite.bin";
      double t0 = now_s();
      std::FILE* f = std::fopen(path.c_str(), "wb");
      DGR_CHECK(f != nullptr, "cannot create {}", path);
      for (const auto& a : model) DGR_CHECK(std::fwrite(a.bytes.data(), 1, a.bytes.size(), f) == a.bytes.size(), "fwrite failed");
      DGR_CHECK(std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0, "fflush/fsync failed");
      std::fclose(f);
      fwrite_s.push_back(now_s() - t0);
      fs::remove(path);

      path = dir + "/alone.h5";
      t0 = now_s();
      dgr::data::h5::File file = dgr::data::h5::File::create(path);
      for (const auto& a : model) file.write_array(a);
      file.close();
      dgr::data::h5::fsync_path(path);
      double t1 = now_s();
      dgr::files::sha256_file(path);
      sha256_s.push_back(now_s() - t1);
      hdf5_s.push_back(t1 - t0);
      fs::remove(path);

      double c0 = now_s();
      {  // into fresh memory, as a first save (or a trainer without the pool) does
        std::vector<NamedArray> fresh;
        for (const auto& a : model) fresh.push_back(NamedArray::copy_of(a.name, a.shape, a.dtype, a.bytes.data()));
        fresh_copy_s.push_back(now_s() - c0);
      }
      c0 = now_s();
      SaveRequest r = copy_request(rep + 1, sync_store);
      copy_s.push_back(now_s() - c0);
      t0 = now_s();
      sync_store.save(std::move(r));
      sync_s.push_back(now_s() - t0);
    }
    const double sync_median = median(sync_s);
    std::vector<double> sync_with_copy_s;
    for (size_t i = 0; i < sync_s.size(); ++i) sync_with_copy_s.push_back(sync_s[i] + copy_s[i]);

    // 2b. Store, async, as the trainer uses it (Note [Overlapped copy]): at a step boundary save() with the
    // arrays as replicated_sources; the next step's forward + backward (--fb-ms of compute that does not
    // touch the arrays) runs while the writer copies them; wait_for_copies() before the "optimizer step",
    // which then changes every array; training goes on (10 ms steps) until the writer is done; wait()
    // commits. Blocked = save() + wait_for_copies() + wait(). Each checkpoint must hold the values from
    // before its own optimizer step: checked after the loop.
    std::vector<float> buffer(1 << 18, 1.0f);
    const double idle_rate = static_cast<double>(train_for(1.0, buffer)) / 1.0;
    std::vector<double> save_call_s, copy_wait_s, wait_call_s, blocked_s, rate_ratio, loaded_write_s;
    auto first_float = [](const NamedArray& a) {
      float x;
      std::memcpy(&x, a.bytes.data(), sizeof x);
      return x;
    };
    auto set_first_float = [](NamedArray& a, float x) { std::memcpy(a.bytes.data(), &x, sizeof x); };
    std::map<std::string, float> original_first;
    for (const auto& a : model) original_first[a.name] = first_float(a);
    {
      StoreOptions o;
      o.dir = dir + "/async";
      o.keep_last = 0;
      o.async = true;
      Store store(o, world);
      auto source_request = [&](int64_t step) {
        SaveRequest r;
        r.step = step;
        for (const auto& a : model) r.replicated_sources.push_back({a.name, a.shape, a.dtype, a.bytes.data()});
        return r;
      };
      store.save(source_request(0));  // a first save: the measured ones copy into recycled buffers
      store.wait();
      for (int rep = 0; rep < reps; ++rep) {
        double t0 = now_s();
        store.save(source_request(rep + 1));
        double t1 = now_s();
        train_for(fb_ms / 1000.0, buffer);  // forward + backward: reads the parameters only
        double t2 = now_s();
        store.wait_for_copies();
        double t3 = now_s();
        for (auto& a : model) set_first_float(a, static_cast<float>(rep + 1));  // the optimizer step
        int64_t passes = 0;
        while (store.writing()) passes += train_for(0.01, buffer);
        double t4 = now_s();
        store.wait();
        double t5 = now_s();
        save_call_s.push_back(t1 - t0);
        copy_wait_s.push_back(t3 - t2);
        wait_call_s.push_back(t5 - t4);
        blocked_s.push_back((t1 - t0) + (t3 - t2) + (t5 - t4));
        loaded_write_s.push_back(t4 - t1);
        rate_ratio.push_back(static_cast<double>(passes) / std::max(1e-9, t4 - t3) / idle_rate);
      }
    }
    for (int rep = 0; rep < reps; ++rep) {  // each snapshot holds the values from before its optimizer step
      LoadedCheckpoint c = load_step(dir + "/async/" + step_dir_name(rep + 1), 0, 1);
      for (const auto& a : c.replicated) {
        const float expected = rep == 0 ? original_first.at(a.name) : static_cast<float>(rep);
        DGR_CHECK(first_float(a) == expected, "async step {}: {} starts with {}, expected {} (a torn snapshot)",
                  rep + 1, a.name, first_float(a), expected);
      }
    }
    for (auto& a : model) set_first_float(a, original_first.at(a.name));

    // 3. Load (every byte verified).
    std::vector<double> load_s;
    std::string step_dir = dir + "/sync/" + step_dir_name(reps);  // the last sync save
    for (int rep = 0; rep < reps; ++rep) {
      double t0 = now_s();
      LoadedCheckpoint c = load_step(step_dir, 0, 1);
      load_s.push_back(now_s() - t0);
      DGR_CHECK(c.replicated.size() == model.size(), "loaded {} arrays, expected {}", c.replicated.size(), model.size());
    }
    LoadedCheckpoint check = load_step(step_dir, 0, 1);
    for (size_t i = 0; i < model.size(); ++i) {
      auto it = std::find_if(check.replicated.begin(), check.replicated.end(),
                             [&](const NamedArray& a) { return a.name == model[i].name; });
      DGR_CHECK(it != check.replicated.end() && it->bytes == model[i].bytes, "array {} differs after load", model[i].name);
    }

    const double fwrite_median = median(fwrite_s);
    const double blocked_median = median(blocked_s);
    std::printf("checkpoint_bench: %lld float32 arrays, %.1f MiB, %d reps (medians), dir %s\n",
                static_cast<long long>(model.size()), total_mib, reps, dir.c_str());
    std::printf("command: %s --dir %s --mib %lld --reps %d --fb-ms %d\n\n", argv[0], dir.c_str(), static_cast<long long>(mib), reps, fb_ms);
    auto row = [&](const char* what, const std::vector<double>& t, const std::string& note) {
      std::printf("| %s | %.3f (%.3f) | %.0f | %s |\n", what, median(t), *std::min_element(t.begin(), t.end()),
                  total_mib / median(t), note.c_str());
    };
    std::printf("| measurement | median (best) s | MiB/s | note |\n|---|---|---|---|\n");
    row("fwrite + fflush + fsync, one file", fwrite_s, "reference");
    row("Store::save, sync: HDF5 file + fsync + sha256 + meta.json + COMMITTED + rename", sync_s,
        fmt::format("**{:.2f}x** fwrite (target >= 0.8x)", fwrite_median / sync_median));
    row("  part: the HDF5 file alone (chunked, Fletcher-32, closed, fsync'ed)", hdf5_s,
        fmt::format("{:.2f}x fwrite", fwrite_median / median(hdf5_s)));
    row("  part: sha256 of that file (recorded in meta.json)", sha256_s, "");
    row("host copy into fresh memory (NamedArray::copy_of: a first save)", fresh_copy_s, "");
    row("host copy into the store's recycled buffers (StagingPool)", copy_s,
        fmt::format("{:.2f}x the copy into fresh memory", median(copy_s) / median(fresh_copy_s)));
    row("sync: host copy + Store::save, what training waits for", sync_with_copy_s, "");
    row("async: training blocked = save() + wait_for_copies() + wait()", blocked_s,
        fmt::format("**{:.1f}%** of the sync save with its copy (target <= 10%)",
                    100.0 * blocked_median / median(sync_with_copy_s)));
    row("  of which save() (returns at once)", save_call_s, "");
    row(fmt::format("  of which wait_for_copies() after {} ms of forward + backward", fb_ms).c_str(), copy_wait_s, "");
    row("  of which wait() after the writer finished (commit)", wait_call_s, "");
    row("async: the background copy + write while training runs", loaded_write_s,
        fmt::format("training ran at {:.0f}% of its idle speed meanwhile", 100.0 * median(rate_ratio)));
    row("load_step: sha256 + HDF5 read + Fletcher-32 of every chunk", load_s,
        fmt::format("{:.2f}x the sync save time", median(load_s) / sync_median));
    fs::remove_all(dir);
    return 0;
  } catch (const dgr::Error& e) {
    std::fprintf(stderr, "checkpoint_bench: %s\n", e.what());
    return 1;
  }
}
