// Fault probe for comm's deadlines (run by tests/comm_fault_check.cmake under mpiexec): every rank runs a
// sequence of allreduces; in the middle, rank --fault-rank stalls (--mode stall: sleeps 60 s) or dies
// (--mode exit: _exit(3)). The others must time out, log the collective, the flight recorder and the ranks
// that did not arrive, and end the whole job non-zero (main catches the CommError and aborts). The
// *_no_window tests run it over TCP with osc rdma, where the ranks are found by progress queries instead of
// the progress window (Note [Progress queries] in comm/watchdog.cpp). With --shared 1 the buffer comes from
// allocate_shared (the ring's shared-memory path when every rank is on one node, where the waiting ranks
// spin on shared counters instead of MPI requests). With --op gather the sequence is of gather_bytes to rank 0
// (--backend host: make_host_communicator, whose waiting ranks sleep instead of spinning).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "common/world.h"

namespace {

struct ProbeOptions {
  std::string backend = "ring";
  std::string mode = "stall";  // stall | exit | stall-setup (before making the communicator) | none
  int64_t timeout_ms = 3000;
  int fault_rank = 2;
  int fault_at = 5;  // before this allreduce (0-based)
  int iterations = 10;
  size_t count = 262144;  // 1 MiB of fp32
  bool shared = false;    // the buffer from allocate_shared
  std::string op = "allreduce";  // allreduce | gather (gather_bytes to rank 0)
};

ProbeOptions parse(int argc, char** argv) {
  ProbeOptions options;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    std::string value = argv[i + 1];
    if (flag == "--backend") options.backend = value;
    else if (flag == "--mode") options.mode = value;
    else if (flag == "--timeout-ms") options.timeout_ms = std::stoll(value);
    else if (flag == "--fault-rank") options.fault_rank = std::stoi(value);
    else if (flag == "--fault-at") options.fault_at = std::stoi(value);
    else if (flag == "--iterations") options.iterations = std::stoi(value);
    else if (flag == "--count") options.count = std::stoull(value);
    else if (flag == "--shared") options.shared = value == "1";
    else if (flag == "--op") options.op = value;
    else throw dgr::ConfigError("unknown flag " + flag + " (use --backend --mode --timeout-ms --fault-rank --fault-at --iterations --count --shared --op)");
  }
  return options;
}

// Rank `rank`'s string in gather `it`.
std::string gather_string(int rank, int it, size_t count) {
  std::string s(count + static_cast<size_t>(rank), '\0');
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>((rank * 31 + it * 7 + static_cast<int>(i)) & 0xFF);
  return s;
}

void gather(dgr::comm::Communicator& comm, const ProbeOptions& options, int it) {
  auto gathered = comm.gather_bytes(gather_string(comm.rank(), it, options.count), 0);
  for (size_t r = 0; r < gathered.size(); ++r) {
    DGR_CHECK(gathered[r] == gather_string(static_cast<int>(r), it, options.count), "gather {}: rank {}'s bytes differ",
              it + 1, r);
  }
}

int run(const ProbeOptions& options, const dgr::World& world) {
  dgr::comm::Options comm_options;
  comm_options.backend = options.backend;
  comm_options.timeout_ms = options.timeout_ms;
  if (options.mode == "stall-setup" && world.rank() == options.fault_rank) {
    std::fprintf(stderr, "probe: rank %d stalls for 60 s before making the communicator\n", world.rank());
    std::fflush(stderr);
    std::this_thread::sleep_for(std::chrono::seconds(60));
  }
  auto comm = options.backend == "host" ? dgr::comm::make_host_communicator(world, options.timeout_ms)
                                        : dgr::comm::make_communicator(comm_options, world);
  std::vector<float> own(options.shared ? 0 : options.count);
  // Not freed: the probe ends with the process (and after a fault the communicator leaks it anyway).
  float* values = options.shared ? static_cast<float*>(comm->allocate_shared(options.count * sizeof(float))) : own.data();
  const int w = world.size();
  for (int it = 0; it < options.iterations; ++it) {
    if (world.rank() == options.fault_rank && it == options.fault_at) {
      if (options.mode == "stall") {
        std::fprintf(stderr, "probe: rank %d stalls for 60 s before %s %d\n", world.rank(), options.op.c_str(), it + 1);
        std::fflush(stderr);
        std::this_thread::sleep_for(std::chrono::seconds(60));
      } else if (options.mode == "exit") {
        std::fprintf(stderr, "probe: rank %d exits with status 3 before %s %d\n", world.rank(), options.op.c_str(), it + 1);
        std::fflush(stderr);
        _exit(3);
      }
    }
    if (options.op == "gather") {
      gather(*comm, options, it);
      continue;
    }
    for (size_t i = 0; i < options.count; ++i) values[i] = static_cast<float>(world.rank() + 1 + static_cast<int>(i % 100));
    comm->allreduce({values, options.count, dgr::comm::DType::kFloat32}, dgr::comm::ReduceOp::kSum);
    for (size_t i = 0; i < options.count; ++i) {
      const float expected = static_cast<float>(w * (w + 1) / 2 + w * static_cast<int>(i % 100));
      DGR_CHECK(values[i] == expected, "allreduce {} element {}: got {}, expected {}", it + 1, i, values[i], expected);
    }
  }
  std::fprintf(stderr, "probe: rank %d completed %d %ss\n", world.rank(), options.iterations, options.op.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  dgr::World world(&argc, &argv);
  dgr::log::init({}, world.rank(), world.size());
  try {
    return run(parse(argc, argv), world);
  } catch (const std::exception& e) {
    // What dgr's main does: log with the rank, flush, and end every rank of the job.
    dgr::log::get("main")->error("fatal: {}", e.what());
    dgr::log::flush();
    world.abort(2);
  }
}
