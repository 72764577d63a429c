// A caching allocator for LibTorch's large CPU tensors, like PyTorch's CUDA caching allocator (and what
// PyTorch's CPU performance guides get from jemalloc or tcmalloc): a freed block of 256 KiB or more goes
// to a free list of its size class instead of back to glibc, and the next tensor of that class reuses it.
// Why (Note [CPU page faults] in cpu_allocator.cpp): a training step frees and reallocates the same large
// activations every step; glibc's heap fragments and grows by fresh pages, and on a virtual machine a
// first touch of a page is expensive (measured ~11 us here), so a step that touched a fresh 15 MiB logits
// buffer took 40-50 ms longer, and with 2 ranks in lockstep the other rank waited for it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dgr::trainer {

struct CpuCacheStats {
  bool installed = false;
  size_t limit_bytes = 0;      // most bytes kept in the free lists (DGR_CPU_CACHE_MIB)
  size_t cached_bytes = 0;     // in the free lists now
  size_t live_bytes = 0;       // handed out now (blocks of at least the minimum size only)
  uint64_t hits = 0;           // allocations served from a free list
  uint64_t misses = 0;         // allocations that went to the system
  uint64_t released = 0;       // freed blocks given back to the system (over the limit, or to retry a failure)
};

inline constexpr size_t kCpuCacheMinBytes = size_t{256} << 10;  // smaller blocks go to LibTorch's allocator

// Makes the caching allocator LibTorch's CPU allocator for the rest of the process (tensors that already
// exist keep their own deleters). Idempotent. The free lists hold at most `limit_bytes`; the
// environment variable DGR_CPU_CACHE_MIB, when set, overrides it, and 0 leaves LibTorch's allocator in
// place (for comparison, or for processes that must hand memory back at once). Returns whether it is
// installed.
bool install_caching_cpu_allocator(size_t limit_bytes = size_t{2048} << 20);

CpuCacheStats caching_cpu_allocator_stats();

// The size class a request of `bytes` (>= kCpuCacheMinBytes) is served from: rounded up to 1/8 of its
// power of two, so a block is at most 12.5% larger than asked.
size_t cpu_cache_size_class(size_t bytes);

}  // namespace dgr::trainer
