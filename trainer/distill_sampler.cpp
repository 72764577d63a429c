// Pools and lists of DGR stage 2 (method.md section 7); see Note [Distillation randomness] in the header.
#include "trainer/distill_sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"

namespace dgr::trainer {
namespace {

// splitmix64: the generator and, applied to a combined word, the hash that derives independent streams.
uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t state = a ^ (b * 0xD6E8FEB86659FD93ull);
  return splitmix(state);
}

// Streams: the pools depend on (seed, example) only; the draws also on the epoch.
constexpr uint64_t kPoolStream = 0x706f6f6c73ull;  // "pools"
constexpr uint64_t kDrawStream = 0x6472617773ull;  // "draws"

uint64_t pool_state(uint64_t seed, uint64_t example_index) { return mix(mix(seed, kPoolStream), example_index); }
uint64_t draw_state(uint64_t seed, int64_t epoch, uint64_t example_index) {
  return mix(mix(mix(seed, kDrawStream), static_cast<uint64_t>(epoch)), example_index);
}

// Uniform in [0, n) by rejection (no modulo bias; n is small, rejections are rare).
uint64_t uniform(uint64_t& state, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x = splitmix(state);
  while (x >= limit) x = splitmix(state);
  return x % n;
}

// `k` distinct elements of `from` chosen uniformly (partial Fisher-Yates), in the order drawn.
std::vector<int32_t> choose(std::vector<int32_t> from, size_t k, uint64_t& state) {
  k = std::min(k, from.size());
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + static_cast<size_t>(uniform(state, from.size() - i));
    std::swap(from[i], from[j]);
  }
  from.resize(k);
  return from;
}

}  // namespace

void DistillSamplerOptions::validate() const {
  DGR_CHECK_AS(ConfigError, positive_pool >= 1, "distill sampler: positive_pool must be >= 1 (the top positive), found {}",
               positive_pool);
  DGR_CHECK_AS(ConfigError, list_negatives >= 1, "distill sampler: list_negatives must be >= 1, found {}", list_negatives);
  DGR_CHECK_AS(ConfigError, negative_pool >= list_negatives,
               "distill sampler: negative_pool ({}) must hold at least list_negatives ({}) negatives", negative_pool,
               list_negatives);
}

DistillSampler::DistillSampler(DistillSamplerOptions options, uint64_t seed) : options_(options), seed_(seed) {
  options_.validate();
}

void DistillSampler::check(const data::DistillExample& example) const {
  size_t positives = 0, negatives = 0;
  for (size_t i = 0; i < example.candidates.size(); ++i) {
    const auto& c = example.candidates[i];
    (c.positive ? positives : negatives) += 1;
    DGR_CHECK_AS(DataError, !std::isnan(c.teacher_score),
                 "query '{}': candidate {} (doc {}) has a NaN teacher score (check the teacher run)", example.qid, i,
                 c.doc);
  }
  DGR_CHECK_AS(DataError, positives >= 1,
               "query '{}' has no positive among its {} candidates; the distillation prepare step should have "
               "dropped it (is the data set prepared with the query filter?)",
               example.qid, example.candidates.size());
  DGR_CHECK_AS(DataError, negatives >= static_cast<size_t>(options_.list_negatives),
               "query '{}' has {} negatives but a list needs {} (list_negatives); the distillation prepare step "
               "should have dropped it (raise its minimum negatives, or lower list_negatives)",
               example.qid, negatives, options_.list_negatives);
}

DistillPools DistillSampler::pools(const data::DistillExample& example, uint64_t example_index) const {
  check(example);
  std::vector<int32_t> positives, negatives;  // retriever order
  for (int32_t i = 0; i < static_cast<int32_t>(example.candidates.size()); ++i) {
    (example.candidates[static_cast<size_t>(i)].positive ? positives : negatives).push_back(i);
  }
  uint64_t state = pool_state(seed_, example_index);
  auto pool = [&](const std::vector<int32_t>& all, int size) {
    std::vector<int32_t> others(all.begin() + 1, all.end());
    std::vector<int32_t> chosen = choose(std::move(others), static_cast<size_t>(size - 1), state);
    std::sort(chosen.begin(), chosen.end());
    chosen.insert(chosen.begin(), all.front());
    return chosen;
  };
  DistillPools out;
  out.positives = pool(positives, options_.positive_pool);
  out.negatives = pool(negatives, options_.negative_pool);
  return out;
}

DistillDraw DistillSampler::draw(const data::DistillExample& example, int64_t epoch, uint64_t example_index) const {
  const DistillPools pool = pools(example, example_index);
  uint64_t state = draw_state(seed_, epoch, example_index);
  const int32_t p_a = pool.positives.front();
  const int32_t p_b = pool.positives[static_cast<size_t>(uniform(state, pool.positives.size()))];

  // The top negative plus list_negatives - 1 others from the pool, in the order drawn.
  std::vector<int32_t> others(pool.negatives.begin() + 1, pool.negatives.end());
  std::vector<int32_t> drawn = choose(std::move(others), static_cast<size_t>(options_.list_negatives - 1), state);
  const int32_t top_negative = pool.negatives.front();
  const int32_t random_negative = drawn.empty() ? top_negative : drawn.front();
  std::vector<int32_t> negatives = drawn;
  negatives.insert(negatives.begin(), top_negative);
  auto teacher = [&](int32_t i) { return example.candidates[static_cast<size_t>(i)].teacher_score; };
  std::sort(negatives.begin(), negatives.end(), [&](int32_t x, int32_t y) {
    if (teacher(x) != teacher(y)) return teacher(x) > teacher(y);
    return x < y;
  });

  DistillDraw out;
  auto make_list = [&](int32_t head) {
    DistillList list;
    list.candidates.push_back(head);
    list.candidates.insert(list.candidates.end(), negatives.begin(), negatives.end());
    for (int32_t i : list.candidates) list.teacher_scores.push_back(teacher(i));
    return list;
  };
  out.a = make_list(p_a);
  out.b = make_list(p_b);
  for (int32_t k = 0; k < static_cast<int32_t>(negatives.size()); ++k) {
    if (negatives[static_cast<size_t>(k)] == top_negative) out.top_negative_position = k + 1;
    if (negatives[static_cast<size_t>(k)] == random_negative) out.random_negative_position = k + 1;
  }
  return out;
}

}  // namespace dgr::trainer
