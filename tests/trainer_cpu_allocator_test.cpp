// The caching CPU allocator (trainer/cpu_allocator.h): a freed large tensor's memory is reused by the
// next tensor of its size class, small tensors stay with LibTorch's allocator, the cache keeps at most its
// limit, DGR_CPU_CACHE_MIB overrides or disables it, and it holds under concurrent use.
// The allocator is installed once per process, so each test sets it up as it needs: ctest runs every test
// of this file in its own process (gtest_discover_tests).
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "common/error.h"
#include "trainer/cpu_allocator.h"

namespace dgr::trainer {
namespace {

torch::Tensor bytes(int64_t n) { return torch::empty({n}, torch::kUInt8); }

TEST(CpuAllocator, SizeClassesRoundUpByAtMostAnEighth) {
  EXPECT_EQ(cpu_cache_size_class(kCpuCacheMinBytes), kCpuCacheMinBytes);
  EXPECT_EQ(cpu_cache_size_class((size_t{4} << 20) + 1), (size_t{4} << 20) + (size_t{512} << 10));
  for (size_t n : {size_t{300000}, size_t{1} << 20, size_t{15400000}, size_t{33554433}}) {
    const size_t c = cpu_cache_size_class(n);
    EXPECT_GE(c, n);
    EXPECT_LE(static_cast<double>(c), static_cast<double>(n) * 1.125 + 64);
    EXPECT_EQ(c % 64, 0u);
    EXPECT_EQ(cpu_cache_size_class(c), c) << "a class is its own class";
  }
}

TEST(CpuAllocator, AFreedLargeTensorsMemoryServesTheNextOfItsClass) {
  unsetenv("DGR_CPU_CACHE_MIB");
  torch::Tensor before = bytes(int64_t{1} << 20);  // LibTorch's: freed through its own deleter later
  ASSERT_TRUE(install_caching_cpu_allocator(size_t{64} << 20));
  void* first = nullptr;
  {
    torch::Tensor a = bytes(int64_t{4} << 20);
    first = a.data_ptr();
    a.fill_(1);
  }
  const CpuCacheStats warm = caching_cpu_allocator_stats();
  EXPECT_TRUE(warm.installed);
  EXPECT_EQ(warm.cached_bytes, size_t{4} << 20);
  EXPECT_EQ(warm.live_bytes, 0u);
  torch::Tensor b = bytes((int64_t{4} << 20) - 1000);  // same class
  EXPECT_EQ(b.data_ptr(), first);
  const CpuCacheStats after = caching_cpu_allocator_stats();
  EXPECT_EQ(after.hits, warm.hits + 1);
  EXPECT_EQ(after.misses, warm.misses);
  EXPECT_EQ(after.cached_bytes, 0u);
  before = torch::Tensor();
  // A block of the next class up serves a request whose own class is empty.
  b = torch::Tensor();
  torch::Tensor c = bytes((int64_t{4} << 20) - (int64_t{600} << 10));
  EXPECT_EQ(c.data_ptr(), first);
}

TEST(CpuAllocator, SmallTensorsStayWithLibTorchsAllocator) {
  unsetenv("DGR_CPU_CACHE_MIB");
  ASSERT_TRUE(install_caching_cpu_allocator());
  const CpuCacheStats start = caching_cpu_allocator_stats();
  { torch::Tensor small = bytes(static_cast<int64_t>(kCpuCacheMinBytes) - 1).fill_(3); }
  const CpuCacheStats end = caching_cpu_allocator_stats();
  EXPECT_EQ(end.hits + end.misses, start.hits + start.misses);
  EXPECT_EQ(end.cached_bytes, start.cached_bytes);
  // raw_allocate / raw_deleter, for both sizes.
  c10::Allocator* allocator = c10::GetCPUAllocator();
  ASSERT_NE(allocator->raw_deleter(), nullptr);
  for (size_t n : {size_t{100}, size_t{1} << 20}) {
    void* p = allocator->raw_allocate(n);
    ASSERT_NE(p, nullptr);
    allocator->raw_deleter()(p);
  }
  EXPECT_EQ(caching_cpu_allocator_stats().live_bytes, 0u);
}

TEST(CpuAllocator, KeepsAtMostItsLimitCachedOldestFirst) {
  unsetenv("DGR_CPU_CACHE_MIB");
  ASSERT_TRUE(install_caching_cpu_allocator(size_t{8} << 20));
  std::vector<torch::Tensor> tensors;
  for (int i = 0; i < 4; ++i) tensors.push_back(bytes(int64_t{3} << 20));
  void* newest = tensors.back().data_ptr();
  tensors.clear();  // freed oldest first: the last two stay cached
  CpuCacheStats s = caching_cpu_allocator_stats();
  EXPECT_EQ(s.limit_bytes, size_t{8} << 20);
  EXPECT_EQ(s.cached_bytes, size_t{6} << 20);
  EXPECT_EQ(s.released, 2u);
  EXPECT_EQ(bytes(int64_t{3} << 20).data_ptr(), newest) << "the most recently freed block comes first";
  // A block larger than the whole limit is never cached.
  { torch::Tensor huge = bytes(int64_t{16} << 20); }
  EXPECT_LE(caching_cpu_allocator_stats().cached_bytes, size_t{8} << 20);
}

TEST(CpuAllocator, EnvironmentZeroLeavesLibTorchsAllocator) {
  setenv("DGR_CPU_CACHE_MIB", "0", 1);
  EXPECT_FALSE(install_caching_cpu_allocator());
  EXPECT_FALSE(caching_cpu_allocator_stats().installed);
  { torch::Tensor t = bytes(int64_t{4} << 20); }
  EXPECT_EQ(caching_cpu_allocator_stats().cached_bytes, 0u);
  unsetenv("DGR_CPU_CACHE_MIB");
}

TEST(CpuAllocator, EnvironmentSetsTheLimitAndABadValueIsAConfigError) {
  setenv("DGR_CPU_CACHE_MIB", "12x", 1);
  try {
    install_caching_cpu_allocator();
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("DGR_CPU_CACHE_MIB='12x'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(caching_cpu_allocator_stats().installed);
  setenv("DGR_CPU_CACHE_MIB", "16", 1);
  ASSERT_TRUE(install_caching_cpu_allocator(size_t{1} << 30));
  EXPECT_EQ(caching_cpu_allocator_stats().limit_bytes, size_t{16} << 20);
  unsetenv("DGR_CPU_CACHE_MIB");
}

TEST(CpuAllocator, ConcurrentAllocationsAndFreesKeepTheBooksBalanced) {
  unsetenv("DGR_CPU_CACHE_MIB");
  ASSERT_TRUE(install_caching_cpu_allocator(size_t{64} << 20));
  auto work = [](unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<torch::Tensor> held;
    for (int i = 0; i < 400; ++i) {
      held.push_back(bytes(std::uniform_int_distribution<int64_t>(int64_t{256} << 10, int64_t{3} << 20)(rng)));
      held.back().data_ptr<uint8_t>()[0] = 1;
      if (held.size() > 4) held.erase(held.begin() + static_cast<int64_t>(rng() % held.size()));
    }
  };
  std::thread a(work, 1u), b(work, 2u);
  work(3u);
  a.join();
  b.join();
  const CpuCacheStats s = caching_cpu_allocator_stats();
  EXPECT_EQ(s.live_bytes, 0u);
  EXPECT_LE(s.cached_bytes, s.limit_bytes);
  EXPECT_GT(s.hits, 0u);
}

}  // namespace
}  // namespace dgr::trainer
