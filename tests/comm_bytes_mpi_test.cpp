// comm's control collectives under mpiexec with 1-3 ranks: gather_bytes and broadcast_bytes of the ring and
// mpi backends and of make_host_communicator, every byte of every result, for sizes 0, 1, uneven per rank
// (one rank empty) and several MiB, from every root, also split into many MPI calls (max_call_bytes 7);
// control traffic on a host communicator beside allreduces on a communication thread; the default
// implementation (nccl's) refusing with a hint.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "comm/communicator.h"
#include "common/error.h"
#include "common/world.h"

namespace {

using dgr::comm::Communicator;

const dgr::World& world() { return *dgr::World::current(); }
int num_ranks() { return world().size(); }
int my_rank() { return world().rank(); }

constexpr int64_t kTestTimeoutMs = 60000;

// Byte i of rank r's string: depends on rank and index, and is not periodic in 256.
char byte_of(int rank, size_t i) { return static_cast<char>((rank * 131 + i * 7 + i / 251) & 0xFF); }

std::string string_of(int rank, size_t num_bytes) {
  std::string s(num_bytes, '\0');
  for (size_t i = 0; i < num_bytes; ++i) s[i] = byte_of(rank, i);
  return s;
}

// Bytes of `got` that differ from string_of(rank, expected_bytes), plus a size mismatch; the first one in
// `first`.
uint64_t mismatches(const std::string& got, int rank, size_t expected_bytes, std::string* first) {
  uint64_t errors = got.size() != expected_bytes;
  if (errors && first->empty()) *first = fmt::format("rank {}'s string has {} bytes, expected {}", rank, got.size(), expected_bytes);
  for (size_t i = 0; i < std::min(got.size(), expected_bytes); ++i) {
    if (got[i] == byte_of(rank, i)) continue;
    if (errors++ == 0 && first->empty()) {
      *first = fmt::format("rank {}'s byte {}: got {}, expected {}", rank, i, static_cast<int>(got[i]),
                           static_cast<int>(byte_of(rank, i)));
    }
  }
  return errors;
}

// Per-rank sizes, [pattern][rank]: all 0, all 1, uneven with rank 1 empty, and several MiB, uneven.
std::vector<std::vector<size_t>> size_patterns() {
  std::vector<std::vector<size_t>> patterns(4);
  for (int r = 0; r < num_ranks(); ++r) {
    const size_t rank = static_cast<size_t>(r);
    patterns[0].push_back(0);
    patterns[1].push_back(1);
    patterns[2].push_back(r == 1 ? 0 : 1000 * rank + 3);
    patterns[3].push_back((size_t{3} << 20) + 777 * rank + 1);
  }
  return patterns;
}

struct BytesCase {
  const char* label;
  const char* backend;    // "host": make_host_communicator
  size_t max_call_bytes;  // 0: the default
};

void PrintTo(const BytesCase& c, std::ostream* os) { *os << c.label; }

std::unique_ptr<Communicator> make_for(const BytesCase& c) {
  if (std::string(c.backend) == "host") return dgr::comm::make_host_communicator(world(), kTestTimeoutMs);
  dgr::comm::Options options;
  options.backend = c.backend;
  options.timeout_ms = kTestTimeoutMs;
  if (c.max_call_bytes != 0) options.max_call_bytes = c.max_call_bytes;
  return dgr::comm::make_communicator(options, world());
}

class CommBytesTest : public ::testing::TestWithParam<BytesCase> {
 protected:
  void SetUp() override { comm_ = make_for(GetParam()); }
  std::unique_ptr<Communicator> comm_;
};

TEST_P(CommBytesTest, GatherBytesEveryByteFromEveryRoot) {
  const bool many_calls = GetParam().max_call_bytes != 0;
  for (const auto& sizes : size_patterns()) {
    // With 7-byte calls, several MiB would take a million calls: the uneven pattern covers the splitting.
    if (many_calls && sizes[0] > 100000) continue;
    for (int root = 0; root < num_ranks(); ++root) {
      const std::string mine = string_of(my_rank(), sizes[static_cast<size_t>(my_rank())]);
      std::vector<std::string> gathered = comm_->gather_bytes(mine, root);
      if (my_rank() != root) {
        EXPECT_TRUE(gathered.empty()) << "rank " << my_rank() << " is not the root but got " << gathered.size() << " strings";
        continue;
      }
      ASSERT_EQ(gathered.size(), static_cast<size_t>(num_ranks()));
      std::string first;
      uint64_t errors = 0;
      for (int r = 0; r < num_ranks(); ++r) {
        errors += mismatches(gathered[static_cast<size_t>(r)], r, sizes[static_cast<size_t>(r)], &first);
      }
      EXPECT_EQ(errors, 0u) << GetParam().label << " gather_bytes to root " << root << " (rank 0 sends " << sizes[0]
                            << " bytes): " << first;
    }
  }
}

TEST_P(CommBytesTest, BroadcastBytesEveryByteFromEveryRoot) {
  const bool many_calls = GetParam().max_call_bytes != 0;
  for (size_t num_bytes : {size_t{0}, size_t{1}, size_t{1001}, (size_t{3} << 20) + 5}) {
    if (many_calls && num_bytes > 100000) continue;
    for (int root = 0; root < num_ranks(); ++root) {
      // Every rank starts with a string of its own, longer or shorter than the root's.
      std::string message = my_rank() == root ? string_of(root, num_bytes) : string_of(my_rank() + 7, 10 + 3 * my_rank());
      comm_->broadcast_bytes(message, root);
      std::string first;
      EXPECT_EQ(mismatches(message, root, num_bytes, &first), 0u)
          << GetParam().label << " broadcast_bytes of " << num_bytes << " bytes from root " << root << " on rank "
          << my_rank() << ": " << first;
    }
  }
}

TEST_P(CommBytesTest, InterleavedWithOtherCollectivesAndBadRoots) {
  for (int round = 0; round < 5; ++round) {
    const std::string mine = string_of(my_rank() + round, static_cast<size_t>(round * my_rank()));
    std::vector<std::string> gathered = comm_->gather_bytes(mine, round % num_ranks());
    comm_->barrier();
    std::string message = my_rank() == 0 ? string_of(round, 17) : std::string();
    comm_->broadcast_bytes(message, 0);
    std::string first;
    EXPECT_EQ(mismatches(message, round, 17, &first), 0u) << first;
    if (my_rank() == round % num_ranks()) {
      for (int r = 0; r < num_ranks(); ++r) {
        EXPECT_EQ(mismatches(gathered[static_cast<size_t>(r)], r + round, static_cast<size_t>(round * r), &first), 0u) << first;
      }
    }
  }
  // A bad root is a local CommError on every rank, and the communicator stays usable.
  EXPECT_THROW(comm_->gather_bytes("x", num_ranks()), dgr::CommError);
  std::string message = "y";
  EXPECT_THROW(comm_->broadcast_bytes(message, -1), dgr::CommError);
  comm_->barrier();
}

INSTANTIATE_TEST_SUITE_P(Backends, CommBytesTest,
                         ::testing::Values(BytesCase{"ring", "ring", 0}, BytesCase{"mpi", "mpi", 0},
                                           BytesCase{"host", "host", 0},
                                           BytesCase{"mpi_7_byte_calls", "mpi", 7},
                                           BytesCase{"ring_7_byte_calls", "ring", 7}),
                         [](const auto& info) { return std::string(info.param.label); });

TEST(CommHost, ControlTrafficBesideAllreducesOnACommunicationThread) {
  // The gradient communicator runs allreduces on its own thread while the main thread gathers and
  // broadcasts on a host communicator: the two must never take each other's messages.
  dgr::comm::Options options;
  options.backend = "ring";
  options.timeout_ms = kTestTimeoutMs;
  auto gradients = dgr::comm::make_communicator(options, world());
  auto control = dgr::comm::make_host_communicator(world(), kTestTimeoutMs);
  EXPECT_STREQ(control->name(), "mpi");
  constexpr int kRounds = 30;
  const int w = num_ranks();
  uint64_t allreduce_errors = 0;
  std::thread thread([&] {
    std::vector<int32_t> values(5000);
    for (int round = 0; round < kRounds; ++round) {
      for (size_t i = 0; i < values.size(); ++i) values[i] = my_rank() * 1000 + round + static_cast<int32_t>(i);
      gradients->allreduce({values.data(), values.size(), dgr::comm::DType::kInt32}, dgr::comm::ReduceOp::kSum);
      for (size_t i = 0; i < values.size(); ++i) {
        allreduce_errors += values[i] != 1000 * w * (w - 1) / 2 + w * (round + static_cast<int32_t>(i));
      }
    }
  });
  uint64_t control_errors = 0;
  std::string first;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::string> gathered = control->gather_bytes(string_of(my_rank() + round, 300 + my_rank()), 0);
    for (int r = 0; my_rank() == 0 && r < w; ++r) {
      control_errors += mismatches(gathered[static_cast<size_t>(r)], r + round, 300 + static_cast<size_t>(r), &first);
    }
    std::string message = my_rank() == w - 1 ? string_of(round, 64) : std::string();
    control->broadcast_bytes(message, w - 1);
    control_errors += mismatches(message, round, 64, &first);
  }
  thread.join();
  EXPECT_EQ(allreduce_errors, 0u);
  EXPECT_EQ(control_errors, 0u) << first;
}

TEST(CommHost, BackendsWithoutHostCollectivesSayWhatToUse) {
  // nccl keeps Communicator's default: a CommError pointing at make_host_communicator.
  class DeviceOnly final : public Communicator {
   public:
    const char* name() const override { return "device-only"; }
    int rank() const override { return 0; }
    int size() const override { return 1; }
    void allreduce(dgr::comm::Buffer, dgr::comm::ReduceOp) override {}
    void broadcast(dgr::comm::Buffer, int) override {}
    void allgather(dgr::comm::Buffer, dgr::comm::Buffer) override {}
    void barrier() override {}
    uint64_t num_collectives() const override { return 0; }
  } device_only;
  try {
    device_only.gather_bytes("abc", 0);
    ADD_FAILURE() << "gather_bytes on a device-only communicator should throw";
  } catch (const dgr::CommError& e) {
    EXPECT_NE(std::string(e.what()).find("make_host_communicator"), std::string::npos) << e.what();
  }
  std::string message = "abc";
  EXPECT_THROW(device_only.broadcast_bytes(message, 0), dgr::CommError);
  dgr::comm::Options options;
  options.backend = "mpi";
  options.max_call_bytes = 0;
  EXPECT_THROW(dgr::comm::make_communicator(options, world()), dgr::ConfigError);
}

}  // namespace
