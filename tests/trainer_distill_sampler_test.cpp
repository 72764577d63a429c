// trainer/distill_sampler.h: the pools and lists of DGR stage 2 (method.md section 7) -- which candidates
// they hold, their distribution over many draws, the teacher order of the negatives, determinism in
// (seed, epoch, example index), and the errors for examples the prepare step should have dropped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "trainer/distill_sampler.h"

namespace dgr::trainer {
namespace {

// 30 candidates in retriever order; positives at kPositives. Teacher scores are a scrambled function of
// the index (not monotone in the retriever's order) and distinct.
const std::vector<int32_t> kPositives = {2, 5, 9, 14, 20, 25, 27};

data::DistillExample make_example(int candidates = 30, std::vector<int32_t> positives = kPositives) {
  data::DistillExample example;
  example.qid = "q42";
  example.query_tokens = {10, 11, 12};
  for (int32_t i = 0; i < candidates; ++i) {
    data::DistillCandidate c;
    c.doc = 1000 + i;
    c.positive = std::find(positives.begin(), positives.end(), i) != positives.end();
    c.retriever_score = 100.0 - i;
    c.teacher_score = static_cast<double>((i * 17 + 5) % 31) + 0.25 * i;
    example.candidates.push_back(c);
  }
  return example;
}

bool is_positive(const data::DistillExample& example, int32_t i) {
  return example.candidates[static_cast<size_t>(i)].positive;
}

TEST(DistillSampler, PoolsHoldTheTopCandidatesAndAreFixedForTheRun) {
  const auto example = make_example();
  const DistillSampler sampler({}, 7);
  const DistillPools pools = sampler.pools(example, 3);
  ASSERT_EQ(pools.positives.size(), 5u);
  ASSERT_EQ(pools.negatives.size(), 15u);
  EXPECT_EQ(pools.positives[0], 2);   // the first positive in retriever order
  EXPECT_EQ(pools.negatives[0], 0);   // the first negative
  for (size_t i = 1; i < pools.positives.size(); ++i) {
    EXPECT_TRUE(is_positive(example, pools.positives[i]));
    EXPECT_LT(pools.positives[i - 1], pools.positives[i]) << "retriever order, distinct";
  }
  for (size_t i = 1; i < pools.negatives.size(); ++i) {
    EXPECT_FALSE(is_positive(example, pools.negatives[i]));
    EXPECT_LT(pools.negatives[i - 1], pools.negatives[i]);
  }
  // Same pools on every call and from another sampler with the same seed; another example index draws anew.
  const DistillSampler again({}, 7);
  EXPECT_EQ(again.pools(example, 3).positives, pools.positives);
  EXPECT_EQ(again.pools(example, 3).negatives, pools.negatives);
  bool differs = false;
  for (uint64_t index = 4; index < 10; ++index) differs |= sampler.pools(example, index).negatives != pools.negatives;
  EXPECT_TRUE(differs);
  // Every draw of every epoch uses these pools.
  const std::set<int32_t> positive_pool(pools.positives.begin(), pools.positives.end());
  const std::set<int32_t> negative_pool(pools.negatives.begin(), pools.negatives.end());
  for (int64_t epoch = 0; epoch < 50; ++epoch) {
    const DistillDraw draw = sampler.draw(example, epoch, 3);
    EXPECT_TRUE(positive_pool.count(draw.b.candidates[0]));
    for (size_t k = 1; k < draw.a.candidates.size(); ++k) EXPECT_TRUE(negative_pool.count(draw.a.candidates[k]));
  }
}

TEST(DistillSampler, PoolMembersBesidesTheTopAreUniform) {
  // Over many queries (example indices), each of the 6 other positives joins the pool with probability
  // 4/6 and each of the 22 other negatives with probability 14/22.
  const auto example = make_example();
  const DistillSampler sampler({}, 11);
  const int runs = 6000;
  std::map<int32_t, int> in_pool;
  for (int r = 0; r < runs; ++r) {
    const DistillPools pools = sampler.pools(example, static_cast<uint64_t>(r));
    for (int32_t i : pools.positives) ++in_pool[i];
    for (int32_t i : pools.negatives) ++in_pool[i];
  }
  for (int32_t i = 0; i < 30; ++i) {
    const double frequency = in_pool[i] / static_cast<double>(runs);
    double expected = is_positive(example, i) ? 4.0 / 6.0 : 14.0 / 22.0;
    if (i == 2 || i == 0) expected = 1.0;  // the tops
    EXPECT_NEAR(frequency, expected, 0.025) << "candidate " << i;
  }
  // Fewer candidates than the pool holds: all of them.
  const auto small = make_example(8, {1, 6});
  const DistillPools pools = sampler.pools(small, 0);
  EXPECT_EQ(pools.positives, (std::vector<int32_t>{1, 6}));
  EXPECT_EQ(pools.negatives, (std::vector<int32_t>{0, 2, 3, 4, 5, 7}));
}

TEST(DistillSampler, DrawDistributionHeadsNegativesAndTeacherOrder) {
  const auto example = make_example();
  const DistillSampler sampler({}, 5);
  const uint64_t index = 17;
  const DistillPools pools = sampler.pools(example, index);
  const int draws = 20000;
  std::map<int32_t, int> heads_b, negatives, random_negatives;
  for (int64_t epoch = 0; epoch < draws; ++epoch) {
    const DistillDraw d = sampler.draw(example, epoch, index);
    ASSERT_EQ(d.a.candidates.size(), 5u);
    ASSERT_EQ(d.b.candidates.size(), 5u);
    ASSERT_EQ(d.a.teacher_scores.size(), 5u);
    EXPECT_EQ(d.a.candidates[0], 2);  // P_a: always the top positive
    ++heads_b[d.b.candidates[0]];
    // Same negatives in both lists; the top negative always present; distinct; by teacher score, descending.
    EXPECT_TRUE(std::equal(d.a.candidates.begin() + 1, d.a.candidates.end(), d.b.candidates.begin() + 1));
    std::set<int32_t> distinct(d.a.candidates.begin() + 1, d.a.candidates.end());
    EXPECT_EQ(distinct.size(), 4u);
    EXPECT_TRUE(distinct.count(0));
    for (size_t k = 0; k < 5; ++k) {
      EXPECT_EQ(d.a.teacher_scores[k], example.candidates[static_cast<size_t>(d.a.candidates[k])].teacher_score);
      EXPECT_EQ(d.b.teacher_scores[k], example.candidates[static_cast<size_t>(d.b.candidates[k])].teacher_score);
      if (k >= 2) {
        EXPECT_GT(d.a.teacher_scores[k - 1], d.a.teacher_scores[k]);
      }
      if (k >= 1) {
        EXPECT_FALSE(is_positive(example, d.a.candidates[k]));
      }
    }
    EXPECT_EQ(d.a.candidates[static_cast<size_t>(d.top_negative_position)], 0);
    const int32_t random_negative = d.a.candidates[static_cast<size_t>(d.random_negative_position)];
    EXPECT_NE(random_negative, 0);
    ++random_negatives[random_negative];
    for (int32_t i : distinct) {
      if (i != 0) ++negatives[i];
    }
  }
  // P_b: uniform over the 5 pool positives (P_a included).
  ASSERT_EQ(heads_b.size(), 5u);
  for (int32_t p : pools.positives) EXPECT_NEAR(heads_b[p] / static_cast<double>(draws), 0.2, 0.012) << p;
  // The 3 other negatives: each of the 14 other pool members with probability 3/14; the LTRGR random
  // negative: uniform over them (1/14).
  ASSERT_EQ(negatives.size(), 14u);
  for (size_t k = 1; k < pools.negatives.size(); ++k) {
    const int32_t n = pools.negatives[k];
    EXPECT_NEAR(negatives[n] / static_cast<double>(draws), 3.0 / 14.0, 0.012) << n;
    EXPECT_NEAR(random_negatives[n] / static_cast<double>(draws), 1.0 / 14.0, 0.008) << n;
  }
}

TEST(DistillSampler, DeterministicInSeedEpochAndExampleIndex) {
  const auto example = make_example();
  const DistillSampler sampler({}, 123);
  auto same = [](const DistillDraw& x, const DistillDraw& y) {
    return x.a.candidates == y.a.candidates && x.b.candidates == y.b.candidates &&
           x.top_negative_position == y.top_negative_position &&
           x.random_negative_position == y.random_negative_position;
  };
  // The same (epoch, index) gives the same draw whatever was drawn before (a resumed run, on any number
  // of ranks, reaches each (epoch, index) with no other state).
  std::vector<DistillDraw> forward;
  for (int64_t epoch = 0; epoch < 3; ++epoch)
    for (uint64_t index = 0; index < 20; ++index) forward.push_back(sampler.draw(example, epoch, index));
  const DistillSampler resumed({}, 123);
  for (int64_t epoch = 2; epoch >= 0; --epoch) {
    for (uint64_t index = 20; index-- > 0;) {
      EXPECT_TRUE(same(resumed.draw(example, epoch, index), forward[static_cast<size_t>(epoch * 20) + index]));
    }
  }
  // Epochs, indices and seeds matter.
  int epoch_changes = 0, seed_changes = 0;
  const DistillSampler other_seed({}, 124);
  for (uint64_t index = 0; index < 20; ++index) {
    epoch_changes += same(forward[index], forward[20 + index]) ? 0 : 1;
    seed_changes += same(forward[index], other_seed.draw(example, 0, index)) ? 0 : 1;
  }
  EXPECT_GE(epoch_changes, 15);
  EXPECT_GE(seed_changes, 15);
}

TEST(DistillSampler, TeacherTiesKeepTheRetrieverOrder) {
  auto example = make_example(10, {3});
  for (auto& c : example.candidates) c.teacher_score = 1.0;
  DistillSamplerOptions options;
  options.list_negatives = 9;  // every negative
  const DistillDraw d = DistillSampler(options, 1).draw(example, 0, 0);
  EXPECT_EQ(d.a.candidates, (std::vector<int32_t>{3, 0, 1, 2, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(d.top_negative_position, 1);
}

TEST(DistillSampler, ExamplesThePrepareStepShouldHaveDroppedAreErrors) {
  const DistillSampler sampler({}, 1);
  auto expect_data_error = [&](const data::DistillExample& example, const std::string& needle) {
    try {
      sampler.draw(example, 0, 0);
      ADD_FAILURE() << "expected DataError (" << needle << ")";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("q42"), std::string::npos) << e.what();
    }
  };
  expect_data_error(make_example(30, {}), "no positive");
  expect_data_error(make_example(4, {0}), "3 negatives but a list needs 4");
  auto nan_teacher = make_example();
  nan_teacher.candidates[7].teacher_score = std::numeric_limits<double>::quiet_NaN();
  expect_data_error(nan_teacher, "NaN teacher score");
  // Exactly enough negatives: each list holds all of them.
  const DistillDraw d = sampler.draw(make_example(5, {4}), 0, 0);
  EXPECT_EQ(std::set<int32_t>(d.a.candidates.begin() + 1, d.a.candidates.end()), (std::set<int32_t>{0, 1, 2, 3}));

  DistillSamplerOptions bad;
  bad.negative_pool = 3;
  EXPECT_THROW(DistillSampler(bad, 1), ConfigError);
  bad = {};
  bad.positive_pool = 0;
  EXPECT_THROW(DistillSampler(bad, 1), ConfigError);
}

}  // namespace
}  // namespace dgr::trainer
