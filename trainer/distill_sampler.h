// DGR stage-2 lists from one prepared query (method.md section 7), without LibTorch: the positive and
// negative pools, and per draw the two lists L_a = [P_a, N1..N4] and L_b = [P_b, N1..N4] with the teacher
// scores the listwise losses need.
//
// Note [Distillation randomness]: every random choice is a pure function of (seed, epoch, example index),
// through a counter-based generator (splitmix64) and never a global RNG, so that a resumed run, on any
// world size, draws exactly what the uninterrupted run drew. The example index is the query's position in
// the whole prepared data set (not in a rank's shard).
//   - Pools are drawn ONCE PER RUN per query, from (seed, example index) only, as the paper builds them
//     once when the data are prepared: every epoch sees the same pools.
//   - Draws come from (seed, epoch, example index): P_b and the 3 pool negatives differ between epochs.
// Within a pool, members keep the retriever's order (the top positive / top negative first).
#pragma once

#include <cstdint>
#include <vector>

#include "data/distill_example.h"

namespace dgr::trainer {

struct DistillSamplerOptions {
  int positive_pool = 5;    // the top positive + up to positive_pool - 1 random other positives
  int negative_pool = 15;   // the top negative + up to negative_pool - 1 random other negatives
  int list_negatives = 4;   // negatives per list: the top negative + list_negatives - 1 from the pool
  // Throws ConfigError naming the first value that cannot work.
  void validate() const;
};

// Indices into DistillExample::candidates, in the retriever's order; element 0 is the top one.
struct DistillPools {
  std::vector<int32_t> positives;  // [positive_pool at most]
  std::vector<int32_t> negatives;  // [negative_pool at most]
};

// One list: the positive head, then the negatives by teacher score, descending (ties: retriever order).
struct DistillList {
  std::vector<int32_t> candidates;    // [1 + list_negatives] indices into DistillExample::candidates
  std::vector<double> teacher_scores; // [1 + list_negatives] the teacher's scores of those candidates
};

struct DistillDraw {
  DistillList a;  // L_a: head = the top positive (P_a)
  DistillList b;  // L_b: head = a positive drawn uniformly from the pool (may be P_a); same negatives as a
  int32_t top_negative_position = 1;     // list position (>= 1) of the retriever's top negative (LTRGR)
  int32_t random_negative_position = 1;  // list position of a negative drawn uniformly from the pool
                                         // without the top negative (LTRGR's random pair); the top
                                         // negative's position when the pool has no other
};

class DistillSampler {
 public:
  DistillSampler(DistillSamplerOptions options, uint64_t seed);  // validates the options

  // Throws DataError naming the query when `example` has no positive or fewer than list_negatives
  // negatives, or a candidate's teacher score is NaN (the prepare step filters such queries).
  void check(const data::DistillExample& example) const;
  // The pools of the query at `example_index` (same for every epoch; Note [Distillation randomness]).
  DistillPools pools(const data::DistillExample& example, uint64_t example_index) const;
  // The lists of the query at `example_index` in `epoch` (Note [Distillation randomness]).
  DistillDraw draw(const data::DistillExample& example, int64_t epoch, uint64_t example_index) const;

  const DistillSamplerOptions& options() const { return options_; }

 private:
  DistillSamplerOptions options_;
  uint64_t seed_;
};

}  // namespace dgr::trainer
