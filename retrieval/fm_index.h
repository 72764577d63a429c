// The FM-index over the corpus token sequences (sdsl-lite, integer alphabet). Text layout (method.md
// section 2): B d_0 B d_1 B ... d_{n-1} B, where B is the document boundary token and each d_i is
// `title @@ body || pq_1 @@ || pq_2 @@ ...` as token ids, so a title key is `B title @@` and a string never
// spans two passages unless it contains B.
//
// The index is built over the REVERSED text, so that backward search consumes a pattern front to back:
// a Range is the suffix-array interval of all occurrences of a prefix, extending it by one token is one
// LF step, and the distinct symbols of the BWT in the range are exactly the tokens that follow the prefix
// somewhere in the corpus (see Note [Reversed text] in fm_index.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace dgr::retrieval {

class FMIndex {
 public:
  // Occurrences of a token string: the half-open suffix-array interval [lo, hi). count = hi - lo.
  // `length` is the number of tokens of the string (locate() needs it to find where an occurrence starts,
  // see Note [Reversed text] in fm_index.cpp): take Ranges from full()/extend()/find()/extensions(), do
  // not make them up.
  struct Range {
    uint64_t lo = 0, hi = 0;
    uint32_t length = 0;
    uint64_t count() const { return hi - lo; }
    bool empty() const { return hi <= lo; }
  };
  // Where one occurrence starts: passage index (order of `build`) and token offset within the passage
  // (offset 0 = first token of the passage; the boundary before it is offset -1).
  struct Occurrence {
    int32_t doc = 0;
    int32_t offset = 0;
  };

  // Builds the index. Token ids must be >= 0 and < 2^31-1, `boundary` must not occur inside a passage
  // (DataError naming the passage otherwise). `num_threads` is a hint (construction may be serial).
  static FMIndex build(const std::vector<std::vector<int32_t>>& passages, int32_t boundary);
  // Writes the index (and the passage token arrays) to `path` atomically; load() reads it back and throws
  // DataError naming the file when it is missing, truncated or not a dgr FM-index.
  void save(const std::string& path) const;
  static FMIndex load(const std::string& path);

  FMIndex(FMIndex&&) noexcept;
  FMIndex& operator=(FMIndex&&) noexcept;
  ~FMIndex();

  // The interval of the empty string: every suffix-array row, N + 1 of them (the sentinel's row included).
  Range full() const;
  // The occurrences of prefix + token, given the interval of prefix. Empty when it does not occur.
  Range extend(Range range, int32_t token) const;
  // The interval of a whole string.
  Range find(std::span<const int32_t> tokens) const;
  uint64_t count(std::span<const int32_t> tokens) const { return find(tokens).count(); }

  // The distinct tokens t such that prefix + t occurs, with the interval of prefix + t each, in increasing
  // token order. This is the constraint of the beam search.
  struct Extension {
    int32_t token;
    Range range;
  };
  std::vector<Extension> extensions(Range range) const;

  // Where the occurrences in `range` start (at most `limit`, in no particular order).
  std::vector<Occurrence> locate(Range range, size_t limit = SIZE_MAX) const;
  // The passages that contain the string, sorted and unique (at most `limit` occurrences are located).
  std::vector<int32_t> passages_containing(std::span<const int32_t> tokens, size_t limit = SIZE_MAX) const;

  size_t num_passages() const;
  // Total tokens of the indexed text, boundaries included (N of the corpus correction, method.md sec. 4).
  uint64_t total_tokens() const;
  int32_t boundary() const;
  // The tokens of one passage as given to build() (no boundary).
  std::span<const int32_t> passage(int32_t doc) const;

 private:
  FMIndex();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgr::retrieval
