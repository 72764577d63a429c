// comm under mpiexec with 1-4 ranks: every element of every allreduce, broadcast and allgather result of
// the ring and mpi backends, for awkward counts (0, 1, W-1, not divisible by W, several segments), every
// dtype, sum and average, with inputs that depend on rank and index; ring vs mpi on the same input;
// barrier; the flight recorder; option errors; the timeout verdict; buffers from allocate_shared (the
// ring's shared-memory path, its fallback when the ranks disagree, and its agreement with the message ring).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "comm/communicator.h"
#include "comm/mpi_base.h"
#include "comm/watchdog.h"
#include "common/error.h"
#include "common/world.h"

namespace {

using dgr::comm::Buffer;
using dgr::comm::Communicator;
using dgr::comm::DType;
using dgr::comm::ReduceOp;

const dgr::World& world() { return *dgr::World::current(); }
int num_ranks() { return world().size(); }
int my_rank() { return world().rank(); }

// Tests use a deadline well below ctest's TIMEOUT: a hang becomes a CommError, not a killed test.
constexpr int64_t kTestTimeoutMs = 60000;

// bf16 written independently of comm's own conversion (round to nearest, ties to even; no NaNs here).
uint16_t to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  uint32_t lower = bits & 0xFFFFu;
  uint32_t upper = bits >> 16;
  if (lower > 0x8000u || (lower == 0x8000u && (upper & 1u))) ++upper;
  return static_cast<uint16_t>(upper);
}
float from_bf16(uint16_t value) {
  uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

// A deterministic value in [-2, 2) from (rank, index): "random-ish" inputs.
float hashed_value(int rank, size_t i) {
  uint64_t x = (static_cast<uint64_t>(rank) << 40) ^ (i * 0x9E3779B97F4A7C15ull);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return static_cast<float>(x % 4096) / 1024.0f - 2.0f;
}

template <typename T>
Buffer buffer_of(std::vector<T>& values, DType dtype) {
  return Buffer{values.data(), values.size(), dtype};
}

// Counts the elements where got[i] != expected(i); describes the first one.
template <typename T, typename Expected>
uint64_t mismatches(const std::vector<T>& got, Expected expected, std::string* first) {
  uint64_t errors = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const T want = expected(i);
    if (!(got[i] == want)) {
      if (errors == 0) *first = fmt::format("first at index {} of {}: got {}, expected {}", i, got.size(), got[i], want);
      ++errors;
    }
  }
  return errors;
}

struct CommCase {
  const char* backend;
  size_t segment_bytes;  // 0: the default of Options
  const char* label;
};

void PrintTo(const CommCase& c, std::ostream* os) { *os << c.label; }

dgr::comm::Options options_for(const CommCase& c) {
  dgr::comm::Options options;
  options.backend = c.backend;
  if (c.segment_bytes != 0) options.segment_bytes = c.segment_bytes;
  options.timeout_ms = kTestTimeoutMs;
  return options;
}

class CommTest : public ::testing::TestWithParam<CommCase> {
 protected:
  void SetUp() override {
    options_ = options_for(GetParam());
    comm_ = dgr::comm::make_communicator(options_, world());
  }

  // 0, 1, W-1, 1000, 1001 (not divisible by 2, 4 or 3 ... mostly), and one count whose chunks span
  // about three segments plus a remainder (several segments per step, count not divisible by W).
  std::vector<size_t> counts(DType dtype) const {
    const size_t segment_count = std::max<size_t>(1, options_.segment_bytes / dgr::comm::dtype_bytes(dtype));
    const size_t w = static_cast<size_t>(num_ranks());
    return {0, 1, w - 1, 1000, 1001, w * (3 * segment_count + 17) + w / 2 + 1};
  }

  std::string where(DType dtype, ReduceOp op, size_t count) const {
    return fmt::format("{} (segment {} B) {} {} count {} on rank {} of {}", GetParam().backend, options_.segment_bytes,
                       dgr::comm::dtype_name(dtype), op == ReduceOp::kSum ? "sum" : "average", count, my_rank(),
                       num_ranks());
  }

  dgr::comm::Options options_;
  std::unique_ptr<Communicator> comm_;
};

TEST_P(CommTest, AllreduceFp32EveryElementExact) {
  // Small integers: every partial sum is exact, in any order, so the result must be exact.
  const int w = num_ranks();
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (size_t count : counts(DType::kFloat32)) {
      std::vector<float> values(count);
      for (size_t i = 0; i < count; ++i) values[i] = static_cast<float>((my_rank() + 1) * 1000 + static_cast<int>(i % 997));
      comm_->allreduce(buffer_of(values, DType::kFloat32), op);
      std::string first;
      uint64_t errors = mismatches(values, [&](size_t i) {
        const float sum = static_cast<float>(1000 * w * (w + 1) / 2 + w * static_cast<int>(i % 997));
        return op == ReduceOp::kSum ? sum : sum / static_cast<float>(w);
      }, &first);
      EXPECT_EQ(errors, 0u) << where(DType::kFloat32, op, count) << ": " << first;
    }
  }
}

TEST_P(CommTest, AllreduceInt32AndInt64EveryElementExact) {
  const int w = num_ranks();
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (size_t count : counts(DType::kInt32)) {
      std::vector<int32_t> values(count);
      for (size_t i = 0; i < count; ++i) values[i] = (my_rank() + 1) * 100003 + static_cast<int32_t>(i) * ((i % 2) ? 1 : -1);
      comm_->allreduce(buffer_of(values, DType::kInt32), op);
      std::string first;
      uint64_t errors = mismatches(values, [&](size_t i) {
        const int32_t sum = 100003 * w * (w + 1) / 2 + w * static_cast<int32_t>(i) * ((i % 2) ? 1 : -1);
        return op == ReduceOp::kSum ? sum : sum / w;  // average: truncating integer division
      }, &first);
      EXPECT_EQ(errors, 0u) << where(DType::kInt32, op, count) << ": " << first;
    }
    for (size_t count : counts(DType::kInt64)) {
      std::vector<int64_t> values(count);
      for (size_t i = 0; i < count; ++i) values[i] = (int64_t{my_rank() + 1} << 34) + static_cast<int64_t>(i) * 7;
      comm_->allreduce(buffer_of(values, DType::kInt64), op);
      std::string first;
      uint64_t errors = mismatches(values, [&](size_t i) {
        const int64_t sum = (int64_t{w} * (w + 1) / 2 << 34) + int64_t{w} * static_cast<int64_t>(i) * 7;
        return op == ReduceOp::kSum ? sum : sum / w;
      }, &first);
      EXPECT_EQ(errors, 0u) << where(DType::kInt64, op, count) << ": " << first;
    }
  }
}

TEST_P(CommTest, AllreduceBf16SmallIntegersExact) {
  // Integers up to 256 are exact in bf16, and so is every partial sum here; the average is the fp32
  // quotient rounded once to bf16.
  const int w = num_ranks();
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (size_t count : counts(DType::kBFloat16)) {
      std::vector<uint16_t> values(count);
      for (size_t i = 0; i < count; ++i) values[i] = to_bf16(static_cast<float>((my_rank() + 1) * 4 + static_cast<int>(i % 7)));
      comm_->allreduce(buffer_of(values, DType::kBFloat16), op);
      std::string first;
      uint64_t errors = mismatches(values, [&](size_t i) {
        const float sum = static_cast<float>(4 * w * (w + 1) / 2 + w * static_cast<int>(i % 7));
        return to_bf16(op == ReduceOp::kSum ? sum : sum / static_cast<float>(w));
      }, &first);
      EXPECT_EQ(errors, 0u) << where(DType::kBFloat16, op, count) << ": " << first;
    }
  }
}

TEST_P(CommTest, AllreduceBf16WithinBf16Precision) {
  // Inexact values of both signs: each of the (at most W) roundings to bf16 costs at most u = 2^-8 of the
  // magnitudes involved, so |result - exact| <= W * 2^-8 * sum_k |x_k| (divided by W for the average).
  const int w = num_ranks();
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (size_t count : counts(DType::kBFloat16)) {
      std::vector<uint16_t> values(count);
      for (size_t i = 0; i < count; ++i) values[i] = to_bf16(hashed_value(my_rank(), i) * 1.37f);
      comm_->allreduce(buffer_of(values, DType::kBFloat16), op);
      uint64_t errors = 0;
      std::string first;
      for (size_t i = 0; i < count; ++i) {
        double exact = 0, magnitude = 0;
        for (int k = 0; k < w; ++k) {
          const double x = from_bf16(to_bf16(hashed_value(k, i) * 1.37f));
          exact += x;
          magnitude += std::fabs(x);
        }
        if (op == ReduceOp::kAverage) {
          exact /= w;
          magnitude /= w;
        }
        const double tolerance = w * std::ldexp(1.0, -8) * magnitude + 1e-30;
        const double got = from_bf16(values[i]);
        if (!(std::fabs(got - exact) <= tolerance)) {
          if (errors == 0) first = fmt::format("first at index {}: got {}, exact {}, tolerance {}", i, got, exact, tolerance);
          ++errors;
        }
      }
      EXPECT_EQ(errors, 0u) << where(DType::kBFloat16, op, count) << ": " << first;
    }
  }
}

TEST_P(CommTest, BroadcastFromEveryRoot) {
  for (int root = 0; root < num_ranks(); ++root) {
    for (size_t count : counts(DType::kInt32)) {
      std::vector<int32_t> values(count, -7);
      if (my_rank() == root) {
        for (size_t i = 0; i < count; ++i) values[i] = root * 1000003 + static_cast<int32_t>(i);
      }
      comm_->broadcast(buffer_of(values, DType::kInt32), root);
      std::string first;
      uint64_t errors = mismatches(values, [&](size_t i) { return root * 1000003 + static_cast<int32_t>(i); }, &first);
      EXPECT_EQ(errors, 0u) << GetParam().backend << " broadcast int32 root " << root << " count " << count << " on rank "
                            << my_rank() << ": " << first;
    }
    // Other element sizes: bf16 (2 bytes, odd byte counts per segment) and int64.
    for (size_t count : {size_t{1}, size_t{1001}, counts(DType::kBFloat16).back()}) {
      std::vector<uint16_t> halves(count, 0xFFFF);
      std::vector<int64_t> wides(count, -1);
      if (my_rank() == root) {
        for (size_t i = 0; i < count; ++i) halves[i] = static_cast<uint16_t>((root * 131 + i) & 0x7F7F);
        for (size_t i = 0; i < count; ++i) wides[i] = (int64_t{root} << 40) + static_cast<int64_t>(i);
      }
      comm_->broadcast(buffer_of(halves, DType::kBFloat16), root);
      comm_->broadcast(buffer_of(wides, DType::kInt64), root);
      std::string first;
      uint64_t errors = mismatches(halves, [&](size_t i) { return static_cast<uint16_t>((root * 131 + i) & 0x7F7F); }, &first);
      errors += mismatches(wides, [&](size_t i) { return (int64_t{root} << 40) + static_cast<int64_t>(i); }, &first);
      EXPECT_EQ(errors, 0u) << GetParam().backend << " broadcast bf16/int64 root " << root << " count " << count << ": "
                            << first;
    }
  }
}

TEST_P(CommTest, AllgatherRankAndIndexDependent) {
  const size_t w = static_cast<size_t>(num_ranks());
  for (size_t count : counts(DType::kInt32)) {
    const size_t per_rank = count / w + (count % 3);  // 0, 1, ... and a multi-segment block
    auto value = [](size_t rank, size_t i) { return static_cast<int32_t>(rank * 7000003 + i); };
    std::vector<int32_t> send(per_rank);
    for (size_t i = 0; i < per_rank; ++i) send[i] = value(static_cast<size_t>(my_rank()), i);
    std::vector<int32_t> recv(per_rank * w, -1);
    comm_->allgather(buffer_of(send, DType::kInt32), buffer_of(recv, DType::kInt32));
    std::string first;
    uint64_t errors = mismatches(recv, [&](size_t j) { return value(j / std::max<size_t>(per_rank, 1), j % std::max<size_t>(per_rank, 1)); }, &first);
    EXPECT_EQ(errors, 0u) << GetParam().backend << " allgather int32 " << per_rank << " per rank: " << first;

    // In place: this rank's block already sits in the receive buffer.
    std::vector<int32_t> in_place(per_rank * w, -1);
    std::copy(send.begin(), send.end(), in_place.begin() + static_cast<ptrdiff_t>(my_rank() * per_rank));
    Buffer own{in_place.data() + static_cast<size_t>(my_rank()) * per_rank, per_rank, DType::kInt32};
    comm_->allgather(own, buffer_of(in_place, DType::kInt32));
    errors = mismatches(in_place, [&](size_t j) { return value(j / std::max<size_t>(per_rank, 1), j % std::max<size_t>(per_rank, 1)); }, &first);
    EXPECT_EQ(errors, 0u) << GetParam().backend << " allgather in place int32 " << per_rank << " per rank: " << first;

    std::vector<uint16_t> send16(per_rank), recv16(per_rank * w, 0xFFFF);
    for (size_t i = 0; i < per_rank; ++i) send16[i] = static_cast<uint16_t>((static_cast<size_t>(my_rank()) * 977 + i) & 0x7F7F);
    comm_->allgather(buffer_of(send16, DType::kBFloat16), buffer_of(recv16, DType::kBFloat16));
    errors = mismatches(recv16, [&](size_t j) {
      const size_t p = std::max<size_t>(per_rank, 1);
      return static_cast<uint16_t>(((j / p) * 977 + j % p) & 0x7F7F);
    }, &first);
    EXPECT_EQ(errors, 0u) << GetParam().backend << " allgather bf16 " << per_rank << " per rank: " << first;
  }
}

TEST_P(CommTest, BarrierWaitsForTheSlowestRank) {
  comm_->barrier();
  const auto start = std::chrono::steady_clock::now();
  if (my_rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  comm_->barrier();
  const double waited_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(waited_ms, 250.0) << "rank " << my_rank() << " left the barrier before rank 0 entered it";
}

TEST_P(CommTest, ManyCollectivesBackToBackDoNotMix) {
  // No barrier in between: a fast rank starts the next collective while a slow one is still finishing
  // the previous; the messages of consecutive collectives must not be confused.
  const int w = num_ranks();
  const size_t sizes[] = {0, 3, 1001, 17, 5000, 1, 64 * 1024 + 3};
  uint64_t errors = 0;
  for (int round = 0; round < 40; ++round) {
    const size_t count = sizes[round % 7];
    std::vector<int32_t> values(count);
    for (size_t i = 0; i < count; ++i) values[i] = my_rank() + round + static_cast<int32_t>(i);
    if (round % 3 == 2) {
      const int root = round % w;
      comm_->broadcast(buffer_of(values, DType::kInt32), root);
      for (size_t i = 0; i < count; ++i) errors += values[i] != root + round + static_cast<int32_t>(i);
    } else {
      comm_->allreduce(buffer_of(values, DType::kInt32), ReduceOp::kSum);
      for (size_t i = 0; i < count; ++i) {
        errors += values[i] != w * (w - 1) / 2 + w * (round + static_cast<int32_t>(i));
      }
    }
  }
  EXPECT_EQ(errors, 0u) << GetParam().backend << " on rank " << my_rank();
}

TEST_P(CommTest, FlightRecorderKeepsTheLastCollectives) {
  const auto* base = dynamic_cast<const dgr::comm::detail::MpiCommunicatorBase*>(comm_.get());
  ASSERT_NE(base, nullptr);
  const uint64_t before = comm_->num_collectives();
  std::vector<float> values(100, 1.0f);
  for (int i = 0; i < 20; ++i) comm_->allreduce(buffer_of(values, DType::kFloat32), ReduceOp::kSum);
  comm_->barrier();
  EXPECT_EQ(comm_->num_collectives(), before + 21);
  const auto records = base->flight_recorder().records();
  ASSERT_EQ(records.size(), dgr::comm::detail::FlightRecorder::kCapacity);
  EXPECT_EQ(records.back().seq, before + 21);
  EXPECT_EQ(records.back().op, dgr::comm::detail::OpKind::kBarrier);
  for (size_t i = 0; i + 1 < records.size(); ++i) {
    EXPECT_EQ(records[i].seq + 1, records[i + 1].seq);
    EXPECT_EQ(records[i].op, dgr::comm::detail::OpKind::kAllreduce);
    EXPECT_EQ(records[i].num_bytes, 400u);
    EXPECT_EQ(records[i].state, dgr::comm::detail::CallState::kDone);
  }
  const std::string line = dgr::comm::detail::format_record(records.front(), std::chrono::steady_clock::now());
  EXPECT_NE(line.find("allreduce 400 B fp32 sum"), std::string::npos) << line;
  EXPECT_FALSE(base->is_broken());
}

TEST_P(CommTest, LocalPreconditionErrorsLeaveTheCommunicatorUsable) {
  std::vector<float> values(10, 1.0f);
  Buffer on_gpu{values.data(), values.size(), DType::kFloat32, dgr::comm::Device::kCuda};
  EXPECT_THROW(comm_->allreduce(on_gpu, ReduceOp::kSum), dgr::CommError);
  std::vector<float> too_small(3);
  EXPECT_THROW(comm_->allgather(buffer_of(values, DType::kFloat32), buffer_of(too_small, DType::kFloat32)),
               dgr::CommError);
  EXPECT_THROW(comm_->broadcast(buffer_of(values, DType::kFloat32), num_ranks()), dgr::CommError);
  comm_->allreduce(buffer_of(values, DType::kFloat32), ReduceOp::kSum);
  for (float v : values) EXPECT_EQ(v, static_cast<float>(num_ranks()));
}

INSTANTIATE_TEST_SUITE_P(Backends, CommTest,
                         ::testing::Values(CommCase{"ring", 0, "ring_default_segment"},
                                           CommCase{"ring", 4096, "ring_4KiB_segments"},
                                           CommCase{"ring", 1000, "ring_1000B_segments"},
                                           CommCase{"mpi", 0, "mpi"}),
                         [](const ::testing::TestParamInfo<CommCase>& info) { return std::string(info.param.label); });

TEST(CommRingVsMpi, AgreeOnTheSameRandomInput) {
  dgr::comm::Options ring_options = options_for({"ring", 0, ""});
  dgr::comm::Options small_ring_options = options_for({"ring", 4096, ""});
  dgr::comm::Options mpi_options = options_for({"mpi", 0, ""});
  auto ring = dgr::comm::make_communicator(ring_options, world());
  auto small_ring = dgr::comm::make_communicator(small_ring_options, world());
  auto mpi = dgr::comm::make_communicator(mpi_options, world());
  const int w = num_ranks();
  for (size_t count : {size_t{1001}, size_t{777777}}) {
    std::vector<float> a(count), b, c;
    std::vector<double> magnitude(count, 0.0);
    for (size_t i = 0; i < count; ++i) a[i] = hashed_value(my_rank(), i) * 3.3f + 1e-3f * static_cast<float>(i % 13);
    for (size_t i = 0; i < count; ++i) {
      for (int k = 0; k < w; ++k) magnitude[i] += std::fabs(hashed_value(k, i) * 3.3f + 1e-3f * static_cast<float>(i % 13));
    }
    b = a;
    c = a;
    ring->allreduce(buffer_of(a, DType::kFloat32), ReduceOp::kAverage);
    small_ring->allreduce(buffer_of(c, DType::kFloat32), ReduceOp::kAverage);
    mpi->allreduce(buffer_of(b, DType::kFloat32), ReduceOp::kAverage);
    uint64_t errors = 0;
    std::string first;
    for (size_t i = 0; i < count; ++i) {
      const double tolerance = 2.0 * w * std::ldexp(1.0, -24) * magnitude[i] / w;
      for (float got : {a[i], c[i]}) {
        if (!(std::fabs(static_cast<double>(got) - b[i]) <= tolerance)) {
          if (errors == 0) first = fmt::format("index {}: ring {} mpi {} tolerance {}", i, got, b[i], tolerance);
          ++errors;
        }
      }
    }
    EXPECT_EQ(errors, 0u) << "fp32 average, count " << count << ": " << first;

    std::vector<int32_t> ia(count), ib;
    for (size_t i = 0; i < count; ++i) ia[i] = static_cast<int32_t>(hashed_value(my_rank(), i) * 100000.0f);
    ib = ia;
    ring->allreduce(buffer_of(ia, DType::kInt32), ReduceOp::kSum);
    mpi->allreduce(buffer_of(ib, DType::kInt32), ReduceOp::kSum);
    EXPECT_EQ(ia, ib) << "int32 sum, count " << count;

    std::vector<uint16_t> ha(count), hb;
    for (size_t i = 0; i < count; ++i) ha[i] = to_bf16(hashed_value(my_rank(), i));
    hb = ha;
    ring->allreduce(buffer_of(ha, DType::kBFloat16), ReduceOp::kSum);
    mpi->allreduce(buffer_of(hb, DType::kBFloat16), ReduceOp::kSum);
    errors = 0;
    for (size_t i = 0; i < count; ++i) {
      double mag = 0;
      for (int k = 0; k < w; ++k) mag += std::fabs(from_bf16(to_bf16(hashed_value(k, i))));
      errors += !(std::fabs(from_bf16(ha[i]) - from_bf16(hb[i])) <= (w + 1) * std::ldexp(1.0, -8) * mag);
    }
    EXPECT_EQ(errors, 0u) << "bf16 sum, count " << count;
  }
}

// ---- buffers from allocate_shared (ring: the shared-memory path when every rank is on one node) ----

// One allocate_shared allocation, freed (collectively) at the end of the scope.
class SharedAllocation {
 public:
  SharedAllocation(Communicator& comm, size_t num_bytes) : comm_(comm), data_(static_cast<char*>(comm.allocate_shared(num_bytes))) {}
  ~SharedAllocation() { comm_.free_shared(data_); }
  SharedAllocation(const SharedAllocation&) = delete;
  SharedAllocation& operator=(const SharedAllocation&) = delete;
  char* data() const { return data_; }
  template <typename T>
  T* as(size_t byte_offset = 0) const { return reinterpret_cast<T*>(data_ + byte_offset); }

 private:
  Communicator& comm_;
  char* data_;
};

class CommSharedTest : public CommTest {};

TEST_P(CommSharedTest, AllocationsAreAlignedAndWritable) {
  for (size_t num_bytes : {size_t{0}, size_t{1}, size_t{4097}, size_t{3} << 20}) {
    SharedAllocation shared(*comm_, num_bytes);
    ASSERT_NE(shared.data(), nullptr) << num_bytes << " bytes";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(shared.data()) % 4096, 0u) << num_bytes << " bytes";
    std::memset(shared.data(), 0x5A, std::max<size_t>(num_bytes, 1));
  }
  comm_->free_shared(nullptr);  // nothing to free: no-op, like free(nullptr)
}

TEST_P(CommSharedTest, AllreduceEveryElementExact) {
  // fp32 and bf16 small integers: every partial sum is exact; the average is the fp32 quotient (rounded
  // once to bf16). Counts 0, 1, W-1, 1000, 1001, one not divisible by W of several MiB.
  const int w = num_ranks();
  const size_t big = (size_t{3} << 20) / 4 * static_cast<size_t>(w) + static_cast<size_t>(w) / 2 + 1;
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      for (size_t count : {size_t{0}, size_t{1}, static_cast<size_t>(w - 1), size_t{1000}, size_t{1001}, big}) {
        SharedAllocation shared(*comm_, count * dgr::comm::dtype_bytes(dtype));
        auto input = [&](size_t i) { return static_cast<float>((my_rank() + 1) * 4 + static_cast<int>(i % 7)); };
        auto expected = [&](size_t i) {
          const float sum = static_cast<float>(4 * w * (w + 1) / 2 + w * static_cast<int>(i % 7));
          return op == ReduceOp::kSum ? sum : sum / static_cast<float>(w);
        };
        uint64_t errors = 0;
        std::string first;
        if (dtype == DType::kFloat32) {
          float* values = shared.as<float>();
          for (size_t i = 0; i < count; ++i) values[i] = input(i);
          comm_->allreduce(Buffer{values, count, dtype}, op);
          std::vector<float> got(values, values + count);
          errors = mismatches(got, expected, &first);
        } else {
          uint16_t* values = shared.as<uint16_t>();
          for (size_t i = 0; i < count; ++i) values[i] = to_bf16(input(i));
          comm_->allreduce(Buffer{values, count, dtype}, op);
          std::vector<uint16_t> got(values, values + count);
          errors = mismatches(got, [&](size_t i) { return to_bf16(expected(i)); }, &first);
        }
        EXPECT_EQ(errors, 0u) << "shared buffer: " << where(dtype, op, count) << ": " << first;
      }
    }
  }
}

TEST_P(CommSharedTest, BufferAtAnOffsetInsideAnAllocationLeavesTheRestAlone) {
  const int w = num_ranks();
  const size_t count = 300007;
  const size_t offset = 4096 + 12;
  const size_t total = offset + count * 4 + 4096;
  SharedAllocation shared(*comm_, total);
  std::memset(shared.data(), 0x7B, total);
  float* values = shared.as<float>(offset);
  for (size_t i = 0; i < count; ++i) values[i] = static_cast<float>(my_rank() * 10 + static_cast<int>(i % 101));
  comm_->allreduce(Buffer{values, count, DType::kFloat32}, ReduceOp::kSum);
  std::vector<float> got(values, values + count);
  std::string first;
  EXPECT_EQ(mismatches(got, [&](size_t i) { return static_cast<float>(10 * w * (w - 1) / 2 + w * static_cast<int>(i % 101)); }, &first), 0u)
      << GetParam().backend << " on rank " << my_rank() << ": " << first;
  uint64_t touched = 0;
  for (size_t i = 0; i < offset; ++i) touched += static_cast<unsigned char>(shared.data()[i]) != 0x7B;
  for (size_t i = offset + count * 4; i < total; ++i) touched += static_cast<unsigned char>(shared.data()[i]) != 0x7B;
  EXPECT_EQ(touched, 0u) << "bytes outside the buffer changed on rank " << my_rank();
}

TEST_P(CommSharedTest, SharedOnSomeRanksOnlyOrAtDifferentOffsetsFallsBackCorrectly) {
  // The ranks do not agree on the buffer: they must all take the message path (and not hang or mix).
  const int w = num_ranks();
  const size_t count = 200003;
  SharedAllocation shared(*comm_, count * 4 + 4096);
  std::vector<float> own(count);
  for (int variant = 0; variant < 3; ++variant) {
    float* values = own.data();
    if (variant == 0 && my_rank() == 0) values = shared.as<float>();                 // rank 0 only
    if (variant == 1 && my_rank() != 0) values = shared.as<float>();                 // all but rank 0
    if (variant == 2) values = shared.as<float>(static_cast<size_t>(my_rank()) * 4);  // different offsets
    for (size_t i = 0; i < count; ++i) values[i] = static_cast<float>(my_rank() + 1 + static_cast<int>(i % 53));
    comm_->allreduce(Buffer{values, count, DType::kFloat32}, ReduceOp::kAverage);
    std::vector<float> got(values, values + count);
    std::string first;
    EXPECT_EQ(mismatches(got, [&](size_t i) {
      return static_cast<float>(w * (w + 1) / 2 + w * static_cast<int>(i % 53)) / static_cast<float>(w);
    }, &first), 0u) << GetParam().backend << " variant " << variant << " on rank " << my_rank() << ": " << first;
  }
}

TEST_P(CommSharedTest, RepeatedAllreducesOnTheSameBufferDoNotMix) {
  // No barrier in between, and each rank rewrites its buffer right after each call: a rank that returned
  // while a peer still read (or wrote) its buffer would corrupt that peer's result.
  const int w = num_ranks();
  const size_t counts[] = {(size_t{4} << 20) / 4 + 3, 1001, 5, (size_t{1} << 20) / 4};
  SharedAllocation shared(*comm_, counts[0] * 4);
  int32_t* values = shared.as<int32_t>();
  uint64_t errors = 0;
  for (int round = 0; round < 24; ++round) {
    const size_t count = counts[round % 4];
    for (size_t i = 0; i < count; ++i) values[i] = (my_rank() + 1) * (round + 1) + static_cast<int32_t>(i % 1000);
    comm_->allreduce(Buffer{values, count, DType::kInt32}, ReduceOp::kSum);
    for (size_t i = 0; i < count; ++i) {
      errors += values[i] != w * (w + 1) / 2 * (round + 1) + w * static_cast<int32_t>(i % 1000);
    }
  }
  EXPECT_EQ(errors, 0u) << GetParam().backend << " on rank " << my_rank();
}

TEST_P(CommSharedTest, BroadcastAndAllgatherAcceptSharedBuffers) {
  const int w = num_ranks();
  const size_t count = 5003;
  SharedAllocation shared(*comm_, count * 4 * static_cast<size_t>(w + 1));
  int32_t* send = shared.as<int32_t>();
  int32_t* recv = send + count;
  for (size_t i = 0; i < count; ++i) send[i] = my_rank() * 100000 + static_cast<int32_t>(i);
  comm_->allgather(Buffer{send, count, DType::kInt32}, Buffer{recv, count * static_cast<size_t>(w), DType::kInt32});
  uint64_t errors = 0;
  for (int r = 0; r < w; ++r) {
    for (size_t i = 0; i < count; ++i) errors += recv[static_cast<size_t>(r) * count + i] != r * 100000 + static_cast<int32_t>(i);
  }
  comm_->broadcast(Buffer{send, count, DType::kInt32}, w - 1);
  for (size_t i = 0; i < count; ++i) errors += send[i] != (w - 1) * 100000 + static_cast<int32_t>(i);
  EXPECT_EQ(errors, 0u) << GetParam().backend << " on rank " << my_rank();
}

INSTANTIATE_TEST_SUITE_P(Backends, CommSharedTest,
                         ::testing::Values(CommCase{"ring", 0, "ring_default_segment"}, CommCase{"mpi", 0, "mpi"}),
                         [](const ::testing::TestParamInfo<CommCase>& info) { return std::string(info.param.label); });

TEST(CommRingVsMpi, SharedPathAgreesWithTheMessageRingAndMpi) {
  // Random-ish inputs: the shared path adds in the ring's order, so it must match the message ring bit for
  // bit (fp32 and bf16, sum and average), and MPI_Allreduce within rounding.
  auto ring = dgr::comm::make_communicator(options_for({"ring", 0, ""}), world());
  auto mpi = dgr::comm::make_communicator(options_for({"mpi", 0, ""}), world());
  const int w = num_ranks();
  for (size_t count : {size_t{1001}, size_t{777777}}) {
    SharedAllocation shared(*ring, count * 4);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      float* s = shared.as<float>();
      std::vector<float> a(count), b;
      for (size_t i = 0; i < count; ++i) a[i] = hashed_value(my_rank(), i) * 3.3f + 1e-3f * static_cast<float>(i % 13);
      std::copy(a.begin(), a.end(), s);
      b = a;
      ring->allreduce(Buffer{s, count, DType::kFloat32}, op);
      ring->allreduce(buffer_of(a, DType::kFloat32), op);
      mpi->allreduce(buffer_of(b, DType::kFloat32), op);
      uint64_t differ = 0;
      uint64_t far = 0;
      for (size_t i = 0; i < count; ++i) {
        differ += std::memcmp(&s[i], &a[i], 4) != 0;
        double magnitude = 0;
        for (int k = 0; k < w; ++k) magnitude += std::fabs(hashed_value(k, i) * 3.3f + 1e-3f * static_cast<float>(i % 13));
        far += !(std::fabs(static_cast<double>(s[i]) - b[i]) <= 2.0 * w * std::ldexp(1.0, -24) * magnitude);
      }
      EXPECT_EQ(differ, 0u) << "fp32 shared vs message ring, count " << count << " rank " << my_rank();
      EXPECT_EQ(far, 0u) << "fp32 shared vs mpi, count " << count << " rank " << my_rank();

      uint16_t* h = shared.as<uint16_t>();
      std::vector<uint16_t> ha(count), hb;
      for (size_t i = 0; i < count; ++i) ha[i] = to_bf16(hashed_value(my_rank(), i));
      std::copy(ha.begin(), ha.end(), h);
      hb = ha;
      ring->allreduce(Buffer{h, count, DType::kBFloat16}, op);
      ring->allreduce(buffer_of(ha, DType::kBFloat16), op);
      mpi->allreduce(buffer_of(hb, DType::kBFloat16), op);
      differ = 0;
      far = 0;
      for (size_t i = 0; i < count; ++i) {
        differ += h[i] != ha[i];
        double magnitude = 0;
        for (int k = 0; k < w; ++k) magnitude += std::fabs(from_bf16(to_bf16(hashed_value(k, i))));
        far += !(std::fabs(from_bf16(h[i]) - from_bf16(hb[i])) <= (w + 1) * std::ldexp(1.0, -8) * magnitude);
      }
      EXPECT_EQ(differ, 0u) << "bf16 shared vs message ring, count " << count << " rank " << my_rank();
      EXPECT_EQ(far, 0u) << "bf16 shared vs mpi, count " << count << " rank " << my_rank();
    }
  }
}

TEST(CommOptions, UnknownOrUnbuiltBackendsAndBadValuesAreConfigErrors) {
  dgr::comm::Options options;
  options.backend = "carrier-pigeon";
  EXPECT_THROW(dgr::comm::make_communicator(options, world()), dgr::ConfigError);
#ifndef DGR_HAVE_NCCL
  options.backend = "nccl";
  try {
    dgr::comm::make_communicator(options, world());
    ADD_FAILURE() << "backend nccl should not be available in this build";
  } catch (const dgr::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("backend 'nccl' is not built"), std::string::npos) << e.what();
  }
#endif
  options.backend = "ring";
  options.segment_bytes = 0;
  EXPECT_THROW(dgr::comm::make_communicator(options, world()), dgr::ConfigError);
  options.segment_bytes = 4096;
  options.timeout_ms = 0;
  EXPECT_THROW(dgr::comm::make_communicator(options, world()), dgr::ConfigError);
}

TEST(CommWatchdog, VerdictNamesTheRanksThatDidNotArrive) {
  using dgr::comm::detail::OpKind;
  using dgr::comm::detail::RankProgress;
  std::vector<RankProgress> progress(5);
  for (auto& p : progress) p = {true, 42, OpKind::kAllreduce};
  progress[2] = {true, 41, OpKind::kAllreduce};
  progress[3] = {false, 0, OpKind::kNone};
  progress[4] = {true, 42, OpKind::kBroadcast};
  auto verdict = dgr::comm::detail::judge_timeout(42, OpKind::kAllreduce, 0, progress);
  EXPECT_EQ(verdict.missing, std::vector<int>{2});
  EXPECT_EQ(verdict.unresponsive, std::vector<int>{3});
  EXPECT_EQ(verdict.diverged, std::vector<int>{4});
  EXPECT_NE(verdict.summary.find("ranks 2 did not arrive (rank 2 last entered #41 allreduce)"), std::string::npos)
      << verdict.summary;
  EXPECT_NE(verdict.summary.find("ranks 3 did not answer"), std::string::npos) << verdict.summary;
  EXPECT_EQ(dgr::comm::detail::format_progress(progress).substr(0, 14), "r0=#42 allredu");

  for (auto& p : progress) p = {true, 7, OpKind::kBarrier};
  verdict = dgr::comm::detail::judge_timeout(7, OpKind::kBarrier, 1, progress);
  EXPECT_TRUE(verdict.missing.empty());
  EXPECT_NE(verdict.summary.find("every rank entered #7"), std::string::npos) << verdict.summary;
  EXPECT_EQ(dgr::comm::detail::format_bytes(4u << 20), "4.0 MiB");
}

}  // namespace
