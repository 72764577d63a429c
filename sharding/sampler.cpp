// EpochSampler (see sampler.h).
#include "sharding/sampler.h"

#include <numeric>
#include <random>

#include "common/error.h"

namespace dgr::sharding {

EpochSampler::EpochSampler(int64_t num_examples, int64_t global_batch, uint64_t seed, int rank, int world_size)
    : num_examples_(num_examples), global_batch_(global_batch), seed_(seed), rank_(rank), world_size_(world_size) {
  DGR_CHECK_AS(ConfigError, num_examples > 0, "the training data has no examples");
  DGR_CHECK_AS(ConfigError, global_batch > 0, "the global batch size must be positive, got {}", global_batch);
  DGR_CHECK_AS(ConfigError, world_size > 0 && rank >= 0 && rank < world_size, "bad rank {} of {}", rank, world_size);
  steps_per_epoch_ = (num_examples + global_batch - 1) / global_batch;
}

void EpochSampler::set_position(const SamplerPosition& position) {
  DGR_CHECK_AS(CheckpointError, position.epoch >= 0 && position.step_in_epoch >= 0 &&
                                    position.step_in_epoch <= steps_per_epoch_,
               "data position epoch {} step {} does not fit this data set ({} steps per epoch): was the "
               "checkpoint made with other data or another global batch size?",
               position.epoch, position.step_in_epoch, steps_per_epoch_);
  position_ = position;
  if (position_.step_in_epoch == steps_per_epoch_) position_ = {position_.epoch + 1, 0};
}

const std::vector<int64_t>& EpochSampler::permutation(int64_t epoch) const {
  if (cached_epoch_ != epoch) {
    cached_permutation_.resize(num_examples_);
    std::iota(cached_permutation_.begin(), cached_permutation_.end(), 0);
    // Fisher-Yates with a fixed generator, so the order is the same with every standard library.
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch));
    for (int64_t i = num_examples_ - 1; i > 0; --i) {
      int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(cached_permutation_[i], cached_permutation_[j]);
    }
    cached_epoch_ = epoch;
  }
  return cached_permutation_;
}

std::vector<int64_t> EpochSampler::examples_of(int64_t epoch, int64_t step, int rank, int world_size) const {
  const auto& order = permutation(epoch);
  int64_t begin = step * global_batch_;
  int64_t count = std::min(global_batch_, num_examples_ - begin);
  // Rank r takes [r*count/W, (r+1)*count/W): sizes differ by at most one.
  int64_t lo = begin + rank * count / world_size, hi = begin + (rank + 1) * count / world_size;
  return std::vector<int64_t>(order.begin() + lo, order.begin() + hi);
}

EpochSampler::Step EpochSampler::next() {
  Step step;
  step.epoch = position_.epoch;
  step.step_in_epoch = position_.step_in_epoch;
  step.examples = examples_of(position_.epoch, position_.step_in_epoch, rank_, world_size_);
  step.global_count = std::min(global_batch_, num_examples_ - position_.step_in_epoch * global_batch_);
  if (++position_.step_in_epoch == steps_per_epoch_) position_ = {position_.epoch + 1, 0};
  return step;
}

}  // namespace dgr::sharding
