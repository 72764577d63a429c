// The caching CPU allocator (see cpu_allocator.h).
//
// Note [CPU page faults]: a training step of the `cpu` preset frees and reallocates the same tensors
// every step, the largest being the [target tokens x vocabulary] logits (15 MiB at batch 64). With
// LibTorch's allocator (glibc's posix_memalign) the heap fragmented: its free space grew from 144 to 220
// MiB over 25 steps while the heap itself kept growing by 15 MiB every few steps, and each growth is
// fresh pages. A first touch of a page cost ~11 us on these virtual machines (3,700-4,100 page faults
// made a forward of 80 ms take 120-140 ms, in 15-25% of the steps). One rank loses 5-10% to it; two ranks
// in lockstep lose it twice, since each waits for the other's slow steps. Blocks kept here are touched
// once and reused: after the first steps a training step takes no page fault for its large tensors.
// Small blocks (< 256 KiB) stay with glibc, whose bins reuse them without touching new pages.
//
// Size classes: a request is rounded up to 1/8 of its power of two (at most 12.5% more memory), so that
// batches whose shapes differ a little from step to step still reuse each other's blocks; when its class
// has no free block, one of the next three classes up serves it (less than 1.5x the request, and only
// while the block is in use: freed, it goes back to its own class). A class's free list is LIFO (the most recently freed block is the warmest). The free lists hold at most limit_bytes;
// past it the oldest cached blocks go back to the system. A failed system allocation first gives every
// cached block back and tries once more.
#include "trainer/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include "trainer/torch_compat.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "common/log.h"

namespace dgr::trainer {
namespace {

constexpr size_t kAlignment = 64;  // LibTorch's CPU alignment (c10::alloc_cpu)
constexpr int kClassesUp = 3;      // a request may take a cached block up to 3 classes larger (< 1.5x)

void release_block(void* ptr);

class CachingCpuAllocator final : public c10::Allocator {
 public:
  CachingCpuAllocator(c10::Allocator* fallback, size_t limit) : fallback_(fallback), limit_(limit) {}

  c10::DataPtr allocate(size_t n) DGR_ALLOCATE_CONST override {
    if (n < kCpuCacheMinBytes) return fallback_->allocate(n);
    void* ptr = const_cast<CachingCpuAllocator*>(this)->take(cpu_cache_size_class(n));
    return {ptr, ptr, &release_block, c10::Device(c10::DeviceType::CPU)};
  }

  // raw_allocate() hands out the fallback's small blocks too: release_block() sends those back to it.
  c10::DeleterFnPtr raw_deleter() const override { return &release_block; }
  DGR_ALLOCATOR_COPY_DATA

  void give_back(void* ptr) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto live = live_.find(ptr);
    if (live == live_.end()) {  // a small block from raw_allocate(): the fallback's
      lock.unlock();
      if (c10::DeleterFnPtr deleter = fallback_->raw_deleter()) deleter(ptr);
      return;
    }
    const size_t size = live->second;
    live_.erase(live);
    stats_.live_bytes -= size;
    if (size > limit_) {
      std::free(ptr);
      ++stats_.released;
      return;
    }
    order_.push_back({ptr, size});
    free_[size].push_back(std::prev(order_.end()));
    stats_.cached_bytes += size;
    while (stats_.cached_bytes > limit_) evict_oldest();
  }

  CpuCacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    CpuCacheStats s = stats_;
    s.installed = true;
    s.limit_bytes = limit_;
    return s;
  }

 private:
  struct Cached {
    void* ptr;
    size_t size;
  };

  // A block of the request's class, else of one of the next kClassesUp classes up, else a new one.
  void* take(size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    void* ptr = nullptr;
    size_t candidate = size;
    for (int up = 0; up <= kClassesUp; ++up, candidate = cpu_cache_size_class(candidate + 1)) {
      auto list = free_.find(candidate);
      if (list == free_.end() || list->second.empty()) continue;
      auto it = list->second.back();
      list->second.pop_back();
      ptr = it->ptr;
      order_.erase(it);
      stats_.cached_bytes -= candidate;
      size = candidate;
      ++stats_.hits;
      break;
    }
    if (ptr == nullptr) {
      ptr = system_allocate(size);
      ++stats_.misses;
    }
    live_.emplace(ptr, size);
    stats_.live_bytes += size;
    return ptr;
  }

  void* system_allocate(size_t size) {
    void* ptr = nullptr;
    if (posix_memalign(&ptr, kAlignment, size) == 0 && ptr != nullptr) return ptr;
    while (!order_.empty()) evict_oldest();  // memory is short: give back what is cached, try again
    ptr = nullptr;
    TORCH_CHECK(posix_memalign(&ptr, kAlignment, size) == 0 && ptr != nullptr,
                "dgr CPU allocator: out of memory allocating ", size, " bytes (", stats_.live_bytes,
                " bytes in use in blocks of 256 KiB or more)");
    return ptr;
  }

  // The oldest cached block is the first of its class's list (blocks enter both in time order).
  void evict_oldest() {
    const Cached oldest = order_.front();
    auto& list = free_[oldest.size];
    list.erase(list.begin());
    order_.pop_front();
    stats_.cached_bytes -= oldest.size;
    ++stats_.released;
    std::free(oldest.ptr);
  }

  c10::Allocator* fallback_;
  const size_t limit_;
  std::mutex mutex_;
  std::list<Cached> order_;                                               // cached blocks, oldest first
  std::unordered_map<size_t, std::vector<std::list<Cached>::iterator>> free_;  // [size class] LIFO
  std::unordered_map<void*, size_t> live_;                                // handed-out blocks and their class
  CpuCacheStats stats_;
};

CachingCpuAllocator* g_allocator = nullptr;  // never destroyed: tensors may be freed during exit
std::mutex g_install_mutex;

void release_block(void* ptr) {
  if (ptr != nullptr) g_allocator->give_back(ptr);
}

size_t limit_from_environment(size_t fallback) {
  const char* value = std::getenv("DGR_CPU_CACHE_MIB");
  if (value == nullptr) return fallback;
  char* end = nullptr;
  errno = 0;
  const unsigned long long mib = std::strtoull(value, &end, 10);
  DGR_CHECK_AS(ConfigError, *value != '\0' && *end == '\0' && errno == 0 && value[0] != '-' && mib < (1ULL << 40),
               "DGR_CPU_CACHE_MIB='{}': expected a whole number of MiB the CPU allocator may keep cached "
               "(0 = LibTorch's own allocator); unset it for the default",
               value);
  return static_cast<size_t>(mib) << 20;
}

}  // namespace

size_t cpu_cache_size_class(size_t bytes) {
  size_t power = 1;
  while (power <= bytes / 2) power <<= 1;  // the largest power of two <= bytes
  const size_t step = std::max<size_t>(power / 8, kAlignment);
  return (bytes + step - 1) / step * step;
}

bool install_caching_cpu_allocator(size_t limit_bytes) {
  std::lock_guard<std::mutex> lock(g_install_mutex);
  if (g_allocator != nullptr) return true;
  const size_t limit = limit_from_environment(limit_bytes);
  if (limit == 0) return false;
  g_allocator = new CachingCpuAllocator(c10::GetCPUAllocator(), limit);
  c10::SetCPUAllocator(g_allocator, /*priority=*/1);  // above LibTorch's default (0)
  log::get("train")->debug("CPU allocator: blocks of {} KiB or more are cached (at most {} MiB kept)",
                           kCpuCacheMinBytes >> 10, limit >> 20);
  return true;
}

CpuCacheStats caching_cpu_allocator_stats() {
  std::lock_guard<std::mutex> lock(g_install_mutex);
  return g_allocator != nullptr ? g_allocator->stats() : CpuCacheStats{};
}

}  // namespace dgr::trainer
