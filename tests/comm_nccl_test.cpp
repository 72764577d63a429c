// The NCCL backend on GPUs, under mpiexec: every element of allreduce (sum, average), broadcast and
// allgather is compared with a value computed on the host, for both algorithms (ncclAllReduce & co. and
// dgr's ncclSend/ncclRecv ring), every dtype and awkward sizes. Without one GPU per rank every rank exits
// with 77, which CTest reports as "skipped" (SKIP_RETURN_CODE), never "passed".
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/nccl_communicator.h"
#include "common/error.h"
#include "common/world.h"

namespace dgr::comm {
namespace {

constexpr int kSkipExitCode = 77;

int g_rank = 0;
int g_size = 1;

#define TEST_CUDA(call)                                                                       \
  do {                                                                                        \
    cudaError_t test_cuda_rc_ = (call);                                                       \
    ASSERT_EQ(test_cuda_rc_, cudaSuccess) << #call << ": " << cudaGetErrorString(test_cuda_rc_); \
  } while (0)

// ---- host-side values ----

uint16_t float_to_bf16(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  bits += 0x7FFFu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

float bf16_to_float(uint16_t value) {
  uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result = 0;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

// The input of `rank` at `index`: depends on both, so a misplaced chunk cannot pass; integers small
// enough that every sum is exact in the dtype (bf16: |sum| < 256).
double input_value(DType dtype, int rank, size_t index) {
  switch (dtype) {
    case DType::kFloat32: return static_cast<double>((index * 7 + rank * 131) % 1000) - 300.0 + rank;
    case DType::kBFloat16: return static_cast<double>((index * 7 + rank * 31) % 64) - 32.0 + rank;
    case DType::kInt32: return static_cast<double>((index * 7 + rank * 131) % 100000 + rank * 1000);
    case DType::kInt64:
      return static_cast<double>((index * 7 + rank * 131) % 100000 + (static_cast<int64_t>(rank + 1) << 40));
  }
  return 0;
}

// `value` as the dtype stores it.
double as_stored(DType dtype, double value) {
  switch (dtype) {
    case DType::kFloat32: return static_cast<float>(value);
    case DType::kBFloat16: return bf16_to_float(float_to_bf16(static_cast<float>(value)));
    case DType::kInt32: return static_cast<int32_t>(value);
    case DType::kInt64: return static_cast<double>(static_cast<int64_t>(value));
  }
  return 0;
}

// Host bytes of one buffer: [count * dtype_bytes(dtype)].
struct HostArray {
  DType dtype;
  std::vector<unsigned char> bytes;

  HostArray(DType dtype_, size_t count) : dtype(dtype_), bytes(count * dtype_bytes(dtype_)) {}
  size_t count() const { return bytes.size() / dtype_bytes(dtype); }

  void set(size_t index, double value) {
    unsigned char* at = bytes.data() + index * dtype_bytes(dtype);
    switch (dtype) {
      case DType::kFloat32: { float v = static_cast<float>(value); std::memcpy(at, &v, 4); break; }
      case DType::kBFloat16: { uint16_t v = float_to_bf16(static_cast<float>(value)); std::memcpy(at, &v, 2); break; }
      case DType::kInt32: { int32_t v = static_cast<int32_t>(value); std::memcpy(at, &v, 4); break; }
      case DType::kInt64: { int64_t v = static_cast<int64_t>(value); std::memcpy(at, &v, 8); break; }
    }
  }
  double get(size_t index) const {
    const unsigned char* at = bytes.data() + index * dtype_bytes(dtype);
    switch (dtype) {
      case DType::kFloat32: { float v; std::memcpy(&v, at, 4); return v; }
      case DType::kBFloat16: { uint16_t v; std::memcpy(&v, at, 2); return bf16_to_float(v); }
      case DType::kInt32: { int32_t v; std::memcpy(&v, at, 4); return v; }
      case DType::kInt64: { int64_t v; std::memcpy(&v, at, 8); return static_cast<double>(v); }
    }
    return 0;
  }
};

// A GPU buffer owned by the test.
class DeviceArray {
 public:
  DeviceArray(DType dtype, size_t count) : dtype_(dtype), count_(count) {
    if (num_bytes() > 0 && cudaMalloc(&data_, num_bytes()) != cudaSuccess) data_ = nullptr;
  }
  ~DeviceArray() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  size_t num_bytes() const { return count_ * dtype_bytes(dtype_); }
  bool ok() const { return num_bytes() == 0 || data_ != nullptr; }
  Buffer buffer() const { return Buffer{data_, count_, dtype_, Device::kCuda}; }
  cudaError_t upload(const HostArray& host) {
    return num_bytes() == 0 ? cudaSuccess : cudaMemcpy(data_, host.bytes.data(), num_bytes(), cudaMemcpyHostToDevice);
  }
  cudaError_t download(HostArray& host) const {
    return num_bytes() == 0 ? cudaSuccess : cudaMemcpy(host.bytes.data(), data_, num_bytes(), cudaMemcpyDeviceToHost);
  }

 private:
  DType dtype_;
  size_t count_;
  void* data_ = nullptr;
};

// Compares every element; returns the number of mismatches and describes the first few.
size_t count_mismatches(const HostArray& got, const std::vector<double>& expected, double relative_tolerance,
                        std::string* first_mismatches) {
  size_t mismatches = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double value = got.get(i);
    const double tolerance = relative_tolerance * std::max(1.0, std::fabs(expected[i]));
    if (std::fabs(value - expected[i]) > tolerance || std::isnan(value)) {
      if (++mismatches <= 5) {
        *first_mismatches += "\n  [" + std::to_string(i) + "] got " + std::to_string(value) + ", expected " +
                             std::to_string(expected[i]);
      }
    }
  }
  return mismatches;
}

// Relative tolerance of an allreduce result: integers and fp32 sums of small integers are exact.
double tolerance(DType dtype, ReduceOp op) {
  switch (dtype) {
    case DType::kBFloat16: return 1.0 / 128;  // a few bf16 roundings (2^-8 each)
    case DType::kFloat32: return op == ReduceOp::kAverage ? 1e-6 : 0.0;
    default: return 0.0;
  }
}

std::vector<size_t> counts_to_test() {
  std::vector<size_t> counts = {0, 1, static_cast<size_t>(g_size - 1), 1001, (size_t{1} << 20) + 3};
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  return counts;
}

const DType kDtypes[] = {DType::kFloat32, DType::kBFloat16, DType::kInt32, DType::kInt64};

// ---- communicators, one per algorithm, made once and destroyed before MPI_Finalize ----

std::map<NcclAlgorithm, std::unique_ptr<Communicator>>& communicators() {
  static std::map<NcclAlgorithm, std::unique_ptr<Communicator>> made;
  return made;
}

Communicator& communicator(NcclAlgorithm algorithm) {
  auto& made = communicators();
  auto it = made.find(algorithm);
  if (it == made.end()) {
    Options options;
    options.backend = "nccl";
    options.timeout_ms = 120000;
    options.segment_bytes = 256 << 10;  // several broadcast segments for the 4 MiB buffers
    it = made.emplace(algorithm, make_nccl_communicator(options, *World::current(), algorithm)).first;
  }
  return *it->second;
}

const char* algorithm_name(NcclAlgorithm algorithm) {
  return algorithm == NcclAlgorithm::kNccl ? "Nccl" : "SendRecvRing";
}

class NcclCollectives : public ::testing::TestWithParam<NcclAlgorithm> {};

TEST_P(NcclCollectives, AllreduceSumAndAverageMatchHostForEveryDtypeAndSize) {
  Communicator& comm = communicator(GetParam());
  ASSERT_EQ(comm.rank(), g_rank);
  ASSERT_EQ(comm.size(), g_size);
  for (DType dtype : kDtypes) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      for (size_t count : counts_to_test()) {
        HostArray host(dtype, count);
        std::vector<double> expected(count, 0.0);  // [i]
        for (size_t i = 0; i < count; ++i) {
          host.set(i, input_value(dtype, g_rank, i));
          for (int r = 0; r < g_size; ++r) expected[i] += as_stored(dtype, input_value(dtype, r, i));
          if (op == ReduceOp::kAverage) {
            const bool integer = dtype == DType::kInt32 || dtype == DType::kInt64;
            expected[i] = integer ? std::trunc(expected[i] / g_size) : expected[i] / g_size;
          }
        }
        DeviceArray device(dtype, count);
        ASSERT_TRUE(device.ok());
        TEST_CUDA(device.upload(host));
        comm.allreduce(device.buffer(), op);
        TEST_CUDA(device.download(host));
        std::string first;
        EXPECT_EQ(count_mismatches(host, expected, tolerance(dtype, op), &first), 0u)
            << "allreduce " << (op == ReduceOp::kSum ? "sum" : "average") << " dtype=" << dtype_name(dtype)
            << " count=" << count << " rank=" << g_rank << first;
      }
    }
  }
}

TEST_P(NcclCollectives, BroadcastFromEveryRootMatchesHost) {
  Communicator& comm = communicator(GetParam());
  for (DType dtype : kDtypes) {
    for (size_t count : counts_to_test()) {
      for (int root = 0; root < g_size; ++root) {
        HostArray host(dtype, count);
        std::vector<double> expected(count);  // [i]
        for (size_t i = 0; i < count; ++i) {
          host.set(i, g_rank == root ? input_value(dtype, root, i) : -7.0);
          expected[i] = as_stored(dtype, input_value(dtype, root, i));
        }
        DeviceArray device(dtype, count);
        ASSERT_TRUE(device.ok());
        TEST_CUDA(device.upload(host));
        comm.broadcast(device.buffer(), root);
        TEST_CUDA(device.download(host));
        std::string first;
        EXPECT_EQ(count_mismatches(host, expected, 0.0, &first), 0u)
            << "broadcast dtype=" << dtype_name(dtype) << " count=" << count << " root=" << root
            << " rank=" << g_rank << first;
      }
    }
  }
}

TEST_P(NcclCollectives, AllgatherPutsEveryRankInRankOrder) {
  Communicator& comm = communicator(GetParam());
  for (DType dtype : kDtypes) {
    for (size_t count : counts_to_test()) {
      HostArray send_host(dtype, count);
      for (size_t i = 0; i < count; ++i) send_host.set(i, input_value(dtype, g_rank, i));
      const size_t recv_count = count * static_cast<size_t>(g_size);
      HostArray recv_host(dtype, recv_count);
      std::vector<double> expected(recv_count);  // [rank * count + i]
      for (int r = 0; r < g_size; ++r) {
        for (size_t i = 0; i < count; ++i) expected[r * count + i] = as_stored(dtype, input_value(dtype, r, i));
      }
      for (size_t i = 0; i < recv_count; ++i) recv_host.set(i, -7.0);
      DeviceArray send(dtype, count);
      DeviceArray recv(dtype, recv_count);
      ASSERT_TRUE(send.ok() && recv.ok());
      TEST_CUDA(send.upload(send_host));
      TEST_CUDA(recv.upload(recv_host));
      comm.allgather(send.buffer(), recv.buffer());
      TEST_CUDA(recv.download(recv_host));
      std::string first;
      EXPECT_EQ(count_mismatches(recv_host, expected, 0.0, &first), 0u)
          << "allgather dtype=" << dtype_name(dtype) << " count=" << count << " rank=" << g_rank << first;
    }
  }
}

TEST_P(NcclCollectives, BarrierAndCollectiveCount) {
  Communicator& comm = communicator(GetParam());
  const uint64_t before = comm.num_collectives();
  comm.barrier();
  comm.barrier();
  EXPECT_EQ(comm.num_collectives(), before + 2);
}

TEST_P(NcclCollectives, CpuBuffersAreAConfigErrorNamingTheOtherBackends) {
  Communicator& comm = communicator(GetParam());
  std::vector<float> host(10, 1.0f);
  Buffer cpu{host.data(), host.size(), DType::kFloat32, Device::kCpu};
  try {
    comm.allreduce(cpu, ReduceOp::kSum);
    FAIL() << "a CPU buffer was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'ring' or 'mpi'"), std::string::npos) << e.what();
  }
  Buffer mislabelled{host.data(), host.size(), DType::kFloat32, Device::kCuda};
  EXPECT_THROW(comm.allreduce(mislabelled, ReduceOp::kSum), ConfigError);
}

INSTANTIATE_TEST_SUITE_P(Algorithms, NcclCollectives,
                         ::testing::Values(NcclAlgorithm::kNccl, NcclAlgorithm::kSendRecvRing),
                         [](const ::testing::TestParamInfo<NcclAlgorithm>& info) {
                           return std::string(algorithm_name(info.param));
                         });

// Rank 0 starts an allreduce that rank 1 never joins: within the deadline rank 0 gets CommError, its
// communicator is aborted, and later calls fail at once instead of hanging.
TEST(NcclDeadline, MissingPeerEndsInCommErrorAndAbort) {
  if (g_size < 2) GTEST_SKIP() << "needs 2 ranks";
  Options options;
  options.backend = "nccl";
  options.timeout_ms = 3000;
  auto comm = make_nccl_communicator(options, *World::current());
  DeviceArray device(DType::kFloat32, 1024);
  ASSERT_TRUE(device.ok());
  if (g_rank == 0) {
    try {
      comm->allreduce(device.buffer(), ReduceOp::kSum);
      ADD_FAILURE() << "an allreduce without its peers finished";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("did not finish within 3000 ms"), std::string::npos) << e.what();
    }
    EXPECT_THROW(comm->allreduce(device.buffer(), ReduceOp::kSum), CommError);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  comm.reset();  // rank 1's teardown must end too (within its own deadline)
  MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace
}  // namespace dgr::comm

int main(int argc, char** argv) {
  dgr::World world(&argc, &argv);
  dgr::comm::g_rank = world.rank();
  dgr::comm::g_size = world.size();
  ::testing::InitGoogleTest(&argc, argv);

  // Skip together: the test needs one GPU per rank on every host.
  const int device_count = dgr::comm::cuda_device_count();
  int raw_count = 0;
  const cudaError_t count_error = cudaGetDeviceCount(&raw_count);
  const std::string why = count_error == cudaSuccess ? "" : std::string(" (") + cudaGetErrorString(count_error) + ")";
  int usable = device_count >= world.local_size() ? 1 : 0;
  int all_usable = 0;
  MPI_Allreduce(&usable, &all_usable, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (all_usable == 0) {
    std::printf("no GPU: skipping (rank %d of %d on %s sees %d CUDA GPU(s)%s for %d local rank(s); the NCCL "
                "tests need one GPU per rank on every host)\n",
                world.rank(), world.size(), world.host().c_str(), device_count, why.c_str(), world.local_size());
    std::fflush(stdout);
    return dgr::comm::kSkipExitCode;
  }

  if (!world.is_root()) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int local_failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  dgr::comm::communicators().clear();  // NCCL teardown before MPI_Finalize
  if (local_failed) {
    std::fprintf(stderr, "rank %d of %d on %s: FAILED\n", world.rank(), world.size(), world.host().c_str());
  }
  int failed_ranks = 0;
  MPI_Allreduce(&local_failed, &failed_ranks, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (world.is_root()) std::printf("%d of %d ranks failed\n", failed_ranks, world.size());
  return failed_ranks == 0 ? 0 : 1;
}
