// Driver of the kill test (checkpoint_kill_test.sh). `--mode write` saves checkpoints of ~--mib MiB every
// step, slowly (a pause before each array), and writes its pid to --pid-dir so the test can SIGKILL it in
// the middle of a write. `--mode resume` must load exactly --expect-step, verify every byte, then save
// the next step over the half-written leftovers.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "checkpoints/store.h"
#include "common/error.h"
#include "common/world.h"

using namespace dgr::checkpoints;

namespace {

struct Args {
  std::string mode, dir, pid_dir;
  int64_t mib = 64;
  int64_t steps = 1000;
  int64_t array_delay_ms = 40;
  int64_t expect_step = -1;
};

constexpr int64_t kArrays = 32;

// Step- and index-dependent contents (exact in float32).
NamedArray weight(int64_t step, int64_t a, int64_t elements) {
  std::vector<float> v(static_cast<size_t>(elements));
  for (int64_t i = 0; i < elements; ++i) v[static_cast<size_t>(i)] = static_cast<float>((i * 31 + a * 7 + step * 1009) % 65521);
  return NamedArray::copy_of(fmt::format("layers.{}.weight", a), {elements / 256, 256}, DType::kFloat32, v.data());
}

NamedArray rng_state(int64_t step, int rank) {
  std::vector<uint8_t> v(5056);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(step * 13 + rank * 101 + i);
  return NamedArray::copy_of("rng.cpu", {static_cast<int64_t>(v.size())}, DType::kUInt8, v.data());
}

SaveRequest request_for(const Args& args, int64_t step, int rank) {
  SaveRequest r;
  r.step = step;
  int64_t elements = args.mib * (1 << 20) / 4 / kArrays / 256 * 256;
  if (rank == 0) {
    for (int64_t a = 0; a < kArrays; ++a) r.replicated.push_back(weight(step, a, elements));
  }
  r.per_rank.push_back(rng_state(step, rank));
  r.state_json = fmt::format("{{\"lr_step\": {}}}", step);
  r.rank_state_json = fmt::format("{{\"cursor\": {}}}", step * 100 + rank);
  return r;
}

int verify(const Args& args, const LoadedCheckpoint& c, int rank) {
  SaveRequest expected = request_for(args, c.step, 0);
  std::sort(expected.replicated.begin(), expected.replicated.end(),
            [](const NamedArray& x, const NamedArray& y) { return x.name < y.name; });
  int bad = 0;
  if (c.replicated.size() != expected.replicated.size()) ++bad;
  uint64_t bytes = 0;
  for (size_t i = 0; bad == 0 && i < c.replicated.size(); ++i) {
    const NamedArray& got = c.replicated[i];
    const NamedArray& want = expected.replicated[i];
    if (got.name != want.name || got.shape != want.shape || got.bytes != want.bytes) {
      std::fprintf(stderr, "rank %d: array %s differs\n", rank, want.name.c_str());
      ++bad;
    }
    bytes += got.bytes.size();
  }
  if (c.per_rank.size() != 1 || c.per_rank[0].bytes != rng_state(c.step, rank).bytes) {
    std::fprintf(stderr, "rank %d: per-rank state differs\n", rank);
    ++bad;
  }
  if (c.rank_state_json != fmt::format("{{\"cursor\":{}}}", c.step * 100 + rank)) {
    std::fprintf(stderr, "rank %d: rank state %s\n", rank, c.rank_state_json.c_str());
    ++bad;
  }
  std::printf("rank %d: step %lld: %s (%llu bytes of weights compared)\n", rank, static_cast<long long>(c.step),
              bad ? "MISMATCH" : "verified", static_cast<unsigned long long>(bytes));
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  dgr::World world(&argc, &argv);
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i], value = argv[i + 1];
    if (key == "--mode") args.mode = value;
    else if (key == "--dir") args.dir = value;
    else if (key == "--pid-dir") args.pid_dir = value;
    else if (key == "--mib") args.mib = std::stoll(value);
    else if (key == "--steps") args.steps = std::stoll(value);
    else if (key == "--array-delay-ms") args.array_delay_ms = std::stoll(value);
    else if (key == "--expect-step") args.expect_step = std::stoll(value);
    else {
      std::fprintf(stderr, "unknown argument %s\n", key.c_str());
      return 2;
    }
  }
  try {
    StoreOptions options;
    options.dir = args.dir;
    options.keep_last = 3;
    options.async = true;
    if (args.mode == "write") {
      if (!args.pid_dir.empty()) {
        std::ofstream(fmt::format("{}/rank-{}.pid", args.pid_dir, world.rank())) << ::getpid() << "\n";
      }
      int64_t delay_ms = args.array_delay_ms;
      options.test_hook = [delay_ms](const std::string&, const std::string& array) {
        if (!array.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      };
      Store store(options, world);
      for (int64_t step = 1; step <= args.steps; ++step) {
        store.save(request_for(args, step, world.rank()));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // "training"
      }
      store.wait();
      return 0;
    }
    if (args.mode == "resume") {
      Store store(options, world);
      std::optional<LoadedCheckpoint> loaded = store.load_latest();
      if (!loaded) {
        std::fprintf(stderr, "rank %d: no checkpoint found\n", world.rank());
        return 1;
      }
      if (loaded->step != args.expect_step) {
        std::fprintf(stderr, "rank %d: resumed from step %lld, expected %lld\n", world.rank(),
                     static_cast<long long>(loaded->step), static_cast<long long>(args.expect_step));
        return 1;
      }
      if (verify(args, *loaded, world.rank()) != 0) return 1;
      // Training goes on: the next step is written over the half-written leftovers and commits.
      store.save(request_for(args, loaded->step + 1, world.rank()));
      store.wait();
      std::optional<LoadedCheckpoint> next = store.load_latest();
      if (!next || next->step != loaded->step + 1 || verify(args, *next, world.rank()) != 0) return 1;
      return 0;
    }
    std::fprintf(stderr, "--mode write|resume is required\n");
    return 2;
  } catch (const dgr::Error& e) {
    std::fprintf(stderr, "rank %d: %s\n", world.rank(), e.what());
    world.abort(1);
  }
}
