// allreduce_bench: the ring, ring-shared (the ring on a buffer from allocate_shared: its shared-memory path when
// every rank is on one node), mpi and plain MPI_Allreduce allreduces side by side in one run, nccl-tests
// style. Time = median of the timed iterations on each rank, max over ranks; algbw = bytes / time; busbw =
// algbw x 2(n-1)/n. Every result is checked element by element; errors are summed over ranks and any
// error makes the exit status non-zero. Run under mpiexec:
//   mpiexec --allow-run-as-root --oversubscribe --bind-to none -n 2 build/bench/allreduce_bench
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "comm/communicator.h"
#include "comm/reduce_kernels.h"
#include "common/error.h"
#include "common/log.h"
#include "common/world.h"

namespace {

using dgr::comm::DType;

struct BenchOptions {
  std::string min_bytes = "4K";
  std::string max_bytes = "256M";
  int step_factor = 4;
  int iters = 0;  // 0: by size
  int warmup = 0;  // 0: by size
  std::string backends = "ring,ring-shared,mpi,MPI_Allreduce";
  std::string dtype = "fp32";
  std::string segment_bytes = "1M";
  int64_t timeout_ms = 600000;
  std::string memcpy_bytes = "64M";
  std::string stat = "median";
};

size_t parse_bytes(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw dgr::ConfigError(fmt::format("'{}' is not a size (use e.g. 4096, 4K, 1M, 256M)", text));
  }
  std::string suffix = text.substr(used);
  double scale = 1;
  if (suffix == "K" || suffix == "KiB") scale = 1024.0;
  else if (suffix == "M" || suffix == "MiB") scale = 1024.0 * 1024;
  else if (suffix == "G" || suffix == "GiB") scale = 1024.0 * 1024 * 1024;
  else if (!suffix.empty() && suffix != "B") throw dgr::ConfigError(fmt::format("'{}': unknown size suffix '{}'", text, suffix));
  return static_cast<size_t>(value * scale);
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(separator, begin);
    if (end == std::string::npos) end = text.size();
    if (end > begin) parts.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return parts;
}

std::string human(size_t num_bytes) {
  if (num_bytes >= (size_t{1} << 30) && num_bytes % (size_t{1} << 30) == 0) return fmt::format("{}G", num_bytes >> 30);
  if (num_bytes >= (size_t{1} << 20) && num_bytes % (size_t{1} << 20) == 0) return fmt::format("{}M", num_bytes >> 20);
  if (num_bytes >= 1024 && num_bytes % 1024 == 0) return fmt::format("{}K", num_bytes >> 10);
  return fmt::format("{}", num_bytes);
}

// Inputs depend on rank and index, and every partial sum is exact (small integers), so the result is
// checked for equality.
float input_value(int rank, size_t i) { return static_cast<float>((rank + 1) * 4 + static_cast<int>(i % 61)); }
float expected_sum(int world_size, size_t i) {
  return static_cast<float>(4 * world_size * (world_size + 1) / 2 + world_size * static_cast<int>(i % 61));
}

void fill(void* data, size_t count, DType dtype, int rank) {
  if (dtype == DType::kFloat32) {
    float* values = static_cast<float*>(data);
    for (size_t i = 0; i < count; ++i) values[i] = input_value(rank, i);
  } else {
    uint16_t* values = static_cast<uint16_t*>(data);
    for (size_t i = 0; i < count; ++i) values[i] = dgr::comm::detail::float_to_bf16(input_value(rank, i));
  }
}

uint64_t count_errors(const void* data, size_t count, DType dtype, int world_size) {
  uint64_t errors = 0;
  if (dtype == DType::kFloat32) {
    const float* values = static_cast<const float*>(data);
    for (size_t i = 0; i < count; ++i) errors += values[i] != expected_sum(world_size, i);
  } else {
    const uint16_t* values = static_cast<const uint16_t*>(data);
    for (size_t i = 0; i < count; ++i) {
      errors += values[i] != dgr::comm::detail::float_to_bf16(expected_sum(world_size, i));
    }
  }
  return errors;
}

struct AlignedBuffer {
  explicit AlignedBuffer(size_t num_bytes) {
    size_t rounded = std::max<size_t>(4096, (num_bytes + 4095) / 4096 * 4096);
    data = static_cast<char*>(std::aligned_alloc(4096, rounded));
    if (data == nullptr) throw dgr::SystemError(fmt::format("cannot allocate {} bytes", rounded));
    std::memset(data, 0, rounded);  // fault the pages in before timing
  }
  ~AlignedBuffer() { std::free(data); }
  char* data;
};

// Waits at a barrier without spinning (so a memcpy timed on another rank has its core to itself).
void quiet_barrier() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  int done = 0;
  while (!done) {
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// Single-core memcpy bandwidth on rank 0 while the other ranks sleep: bytes copied / time.
double memcpy_bandwidth(const dgr::World& world, size_t num_bytes) {
  double bandwidth = 0;
  quiet_barrier();
  if (world.is_root()) {
    AlignedBuffer src(num_bytes), dst(num_bytes);
    std::memset(src.data, 1, num_bytes);
    std::vector<double> seconds;
    for (int i = 0; i < 12; ++i) {
      double t0 = MPI_Wtime();
      std::memcpy(dst.data, src.data, num_bytes);
      double t1 = MPI_Wtime();
      if (i >= 2) seconds.push_back(t1 - t0);
    }
    if (dst.data[num_bytes / 2] != 1) std::fprintf(stderr, "memcpy check failed\n");
    bandwidth = static_cast<double>(num_bytes) / median(seconds);
  }
  quiet_barrier();
  MPI_Bcast(&bandwidth, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  return bandwidth;
}

struct Result {
  double seconds = 0;  // median over timed iterations, max over ranks
  uint64_t errors = 0;  // summed over ranks and iterations
};

int run(int argc, char** argv, const dgr::World& world) {
  BenchOptions options;
  CLI::App app{"allreduce bandwidth of dgr's communicators (ring, mpi) and plain MPI_Allreduce, side by side"};
  app.add_option("--min-bytes", options.min_bytes, "smallest buffer (4K, 1M, ...)")->capture_default_str();
  app.add_option("--max-bytes", options.max_bytes, "largest buffer")->capture_default_str();
  app.add_option("--step-factor", options.step_factor, "size multiplier between rows")->capture_default_str();
  app.add_option("--iters", options.iters, "timed iterations per size (0: about 0.5 GiB of traffic, 5..200)");
  app.add_option("--warmup", options.warmup, "untimed iterations per size (0: iters / 10, at least 2)");
  app.add_option("--backends", options.backends, "comma-separated: ring, ring-shared (ring on a buffer from "
                 "allocate_shared: the shared-memory path on one node), mpi, MPI_Allreduce (blocking, no deadline)")
      ->capture_default_str();
  app.add_option("--dtype", options.dtype, "fp32 or bf16")->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  app.add_option("--segment-bytes", options.segment_bytes, "ring pipeline segment")->capture_default_str();
  app.add_option("--timeout-ms", options.timeout_ms, "deadline of every collective")->capture_default_str();
  app.add_option("--memcpy-bytes", options.memcpy_bytes, "buffer of the single-core memcpy reference")->capture_default_str();
  app.add_option("--stat", options.stat, "per-rank time over the timed iterations: median, or min (best case)")
      ->check(CLI::IsMember({"median", "min"}))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return world.is_root() ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 2);
  }

  const DType dtype = options.dtype == "bf16" ? DType::kBFloat16 : DType::kFloat32;
  const size_t element_bytes = dgr::comm::dtype_bytes(dtype);
  const size_t min_bytes = std::max(parse_bytes(options.min_bytes), element_bytes);
  const size_t max_bytes = parse_bytes(options.max_bytes);
  const int n = world.size();
  const double bus_factor = n > 1 ? 2.0 * (n - 1) / n : 1.0;
  std::vector<std::string> backends = split(options.backends, ',');

  dgr::comm::Options comm_options;
  comm_options.timeout_ms = options.timeout_ms;
  comm_options.segment_bytes = parse_bytes(options.segment_bytes);
  std::vector<std::unique_ptr<dgr::comm::Communicator>> communicators;  // [backend], null for MPI_Allreduce
  for (const std::string& backend : backends) {
    if (backend == "MPI_Allreduce") {
      communicators.emplace_back();
      continue;
    }
    comm_options.backend = backend == "ring-shared" ? "ring" : backend;
    communicators.push_back(dgr::comm::make_communicator(comm_options, world));
  }
  // ring-shared's buffer comes from allocate_shared (collective; freed before the communicators go).
  const auto shared_it = std::find(backends.begin(), backends.end(), "ring-shared");
  const auto mpi_it = std::find(backends.begin(), backends.end(), "MPI_Allreduce");
  const bool has_shared = shared_it != backends.end();
  // ring-shared's own ratios, unless it is the first backend (then the columns above have them).
  const bool shared_ratios = has_shared && shared_it != backends.begin();
  const size_t shared_index = static_cast<size_t>(shared_it - backends.begin());
  const size_t mpi_index = static_cast<size_t>(mpi_it - backends.begin());
  char* shared_data = has_shared ? static_cast<char*>(communicators[shared_index]->allocate_shared(max_bytes)) : nullptr;

  const double memcpy_bw = memcpy_bandwidth(world, parse_bytes(options.memcpy_bytes));
  AlignedBuffer buffer(max_bytes);

  if (world.is_root()) {
    std::printf("# dgr allreduce_bench: %d ranks, %s sum, ring segment %s, host %s\n", n, options.dtype.c_str(),
                human(comm_options.segment_bytes).c_str(), world.host().c_str());
    std::printf("# time: %s of the timed iterations on each rank, max over ranks; a barrier before each; the backends\n"
                "#   take turns iteration by iteration (same load for all on a shared machine)\n", options.stat.c_str());
    std::printf("# algbw = bytes / time; busbw = algbw * 2(n-1)/n (nccl-tests); GB/s = 1e9 bytes/s\n");
    std::printf("# memcpy: one core, %s buffer: %.2f GB/s, counted as bytes copied / time (each byte read once and\n"
                "#   written once, counted once, the way busbw counts each byte of the buffer once)\n",
                human(parse_bytes(options.memcpy_bytes)).c_str(), memcpy_bw / 1e9);
    const char* single_copy = std::getenv("OMPI_MCA_btl_vader_single_copy_mechanism");
    std::printf("# Open MPI shared-memory single copy (btl_vader_single_copy_mechanism): %s\n",
                single_copy ? single_copy : "default (cma when the kernel allows it)");
    std::printf("# #err: wrong elements over all ranks and iterations (every element of every result is checked)\n");
    std::printf("#\n#%10s %11s %5s", "size", "count", "iters");
    for (const std::string& backend : backends) std::printf(" | %-32s", backend.c_str());
    std::printf(" |");
    for (size_t b = 1; b < backends.size(); ++b) std::printf(" %s/%s", backends[0].c_str(), backends[b].c_str());
    std::printf(" %s/memcpy", backends[0].c_str());
    if (shared_ratios && mpi_it != backends.end()) std::printf(" ring-shared/MPI_Allreduce");
    if (shared_ratios) std::printf(" ring-shared/memcpy");
    std::printf("\n#%10s %11s %5s", "(B)", "(elems)", "");
    for (size_t b = 0; b < backends.size(); ++b) std::printf(" | %9s %7s %7s %6s", "time(us)", "algbw", "busbw", "#err");
    std::printf(" |\n");
    std::fflush(stdout);
  }

  uint64_t total_errors = 0;
  for (size_t num_bytes = min_bytes; num_bytes <= max_bytes; num_bytes *= static_cast<size_t>(options.step_factor)) {
    const size_t count = num_bytes / element_bytes;
    const int iters = options.iters > 0 ? options.iters
                                        : static_cast<int>(std::clamp<size_t>((size_t{512} << 20) / num_bytes, 5, 200));
    const int warmup = options.warmup > 0 ? options.warmup : std::max(2, iters / 10);
    // The backends take turns iteration by iteration, so on a shared machine each sees the same load.
    std::vector<std::vector<double>> seconds(backends.size());  // [backend][timed iteration]
    std::vector<uint64_t> errors(backends.size(), 0);          // [backend]
    for (int it = 0; it < warmup + iters; ++it) {
      for (size_t b = 0; b < backends.size(); ++b) {
        char* data = has_shared && b == shared_index ? shared_data : buffer.data;
        fill(data, count, dtype, world.rank());
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = MPI_Wtime();
        if (communicators[b]) {
          communicators[b]->allreduce({data, count, dtype}, dgr::comm::ReduceOp::kSum);
        } else if (dtype == DType::kFloat32) {
          MPI_Allreduce(MPI_IN_PLACE, buffer.data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        } else {
          throw dgr::ConfigError("MPI_Allreduce has no bf16: run it with --dtype fp32");
        }
        const double t1 = MPI_Wtime();
        if (it >= warmup) seconds[b].push_back(t1 - t0);
        errors[b] += count_errors(data, count, dtype, n);
      }
    }
    std::vector<Result> results(backends.size());
    for (size_t b = 0; b < backends.size(); ++b) {
      double local = options.stat == "min" ? *std::min_element(seconds[b].begin(), seconds[b].end()) : median(seconds[b]);
      MPI_Allreduce(&local, &results[b].seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      unsigned long long local_errors = errors[b], all_errors = 0;
      MPI_Allreduce(&local_errors, &all_errors, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
      results[b].errors = all_errors;
      total_errors += all_errors;
    }
    if (world.is_root()) {
      std::printf(" %10zu %11zu %5d", num_bytes, count, iters);
      std::vector<double> busbw(backends.size());
      for (size_t b = 0; b < backends.size(); ++b) {
        const double algbw = static_cast<double>(num_bytes) / results[b].seconds;
        busbw[b] = algbw * bus_factor;
        std::printf(" | %9.1f %7.2f %7.2f %6llu", results[b].seconds * 1e6, algbw / 1e9, busbw[b] / 1e9,
                    static_cast<unsigned long long>(results[b].errors));
      }
      std::printf(" |");
      for (size_t b = 1; b < backends.size(); ++b) {
        std::printf(" %*.2f", static_cast<int>(backends[0].size() + backends[b].size() + 1), busbw[0] / busbw[b]);
      }
      std::printf(" %*.2f", static_cast<int>(backends[0].size() + 7), busbw[0] / memcpy_bw);
      if (shared_ratios && mpi_it != backends.end()) std::printf(" %25.2f", busbw[shared_index] / busbw[mpi_index]);
      if (shared_ratios) std::printf(" %18.2f", busbw[shared_index] / memcpy_bw);
      std::printf("\n");
      std::fflush(stdout);
    }
    if (num_bytes > max_bytes / static_cast<size_t>(options.step_factor)) break;
  }
  if (has_shared) communicators[shared_index]->free_shared(shared_data);
  if (world.is_root()) {
    std::printf("# %s: %llu wrong elements in total\n", total_errors == 0 ? "OK" : "FAILED",
                static_cast<unsigned long long>(total_errors));
  }
  return total_errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  dgr::World world(&argc, &argv);
  dgr::log::init({}, world.rank(), world.size());
  int status = 0;
  try {
    status = run(argc, argv, world);
  } catch (const std::exception& e) {
    dgr::log::get("bench")->error("{}", e.what());
    dgr::log::flush();
    world.abort(1);
  }
  return status;
}
