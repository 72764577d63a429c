// EpochSampler: which examples each rank trains on, step by step. Every epoch is a permutation of all
// examples (seeded by seed and epoch, independent of the world size); step k of an epoch covers the
// global batch permutation[k*G, (k+1)*G), split as evenly as possible over the ranks. Every example is
// seen exactly once per epoch, every rank runs the same number of steps (the last step of an epoch may be
// smaller, and a rank may get no example in it but still takes part), and the position (epoch, step) means
// the same on any world size, so a run resumes on another number of ranks without repeating or skipping.
#pragma once

#include <cstdint>
#include <vector>

namespace dgr::sharding {

struct SamplerPosition {
  int64_t epoch = 0;
  int64_t step_in_epoch = 0;  // next step to run
};

class EpochSampler {
 public:
  // num_examples > 0, global_batch > 0. Same arguments on every rank (rank/world_size aside).
  EpochSampler(int64_t num_examples, int64_t global_batch, uint64_t seed, int rank, int world_size);

  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  const SamplerPosition& position() const { return position_; }
  void set_position(const SamplerPosition& position);

  // This rank's example indices for the next step (maybe empty), and the size of the whole global batch
  // of that step (to weight losses: sum of per-example losses / global_count gives the mean over the
  // global batch). Advances the position; a new epoch starts after the last step.
  struct Step {
    std::vector<int64_t> examples;  // [rank's examples] indices into the data set
    int64_t global_count = 0;       // examples in this step over all ranks
    int64_t epoch = 0;
    int64_t step_in_epoch = 0;
  };
  Step next();

  // The examples of (epoch, step) for `rank` of `world_size`, without changing the position.
  std::vector<int64_t> examples_of(int64_t epoch, int64_t step, int rank, int world_size) const;

 private:
  const std::vector<int64_t>& permutation(int64_t epoch) const;

  int64_t num_examples_, global_batch_, steps_per_epoch_;
  uint64_t seed_;
  int rank_, world_size_;
  SamplerPosition position_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_permutation_;  // [position in epoch] example index
};

}  // namespace dgr::sharding
