// The paired tests, Holm and the seed interval on cases computed by hand (retrieval/significance.h).
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "retrieval/significance.h"

namespace dgr::retrieval {
namespace {

TEST(StudentT, ClosedFormsOfSmallDegreesOfFreedom) {
  // df 1 is Cauchy: P(|T| >= t) = 1 - (2/pi) atan(t); df 2: 1 - t / sqrt(2 + t^2).
  EXPECT_NEAR(student_t_two_sided_p(1.0, 1), 0.5, 1e-12);
  EXPECT_NEAR(student_t_two_sided_p(3.0, 1), 1 - 2 / M_PI * std::atan(3.0), 1e-12);
  EXPECT_NEAR(student_t_two_sided_p(2.0, 2), 1 - 2 / std::sqrt(6.0), 1e-12);
  EXPECT_NEAR(student_t_two_sided_p(-2.0, 2), 1 - 2 / std::sqrt(6.0), 1e-12);
  EXPECT_DOUBLE_EQ(student_t_two_sided_p(0.0, 7), 1.0);
  // Tables: t(0.975) for df 1, 3, 4, 30.
  EXPECT_NEAR(student_t_quantile(0.975, 1), 12.706205, 1e-5);
  EXPECT_NEAR(student_t_quantile(0.975, 3), 3.182446, 1e-5);
  EXPECT_NEAR(student_t_quantile(0.975, 4), 2.776445, 1e-5);
  EXPECT_NEAR(student_t_quantile(0.975, 30), 2.042272, 1e-5);
  EXPECT_NEAR(student_t_quantile(0.025, 4), -2.776445, 1e-5);
  EXPECT_NEAR(student_t_two_sided_p(2.776445, 4), 0.05, 1e-6);
}

TEST(PairedTests, DisagreeOnSignificance) {
  // d = (0.9, 1, 1.1, 1, 1): the t-test sees a tiny spread (t = sqrt(1000), p < 1e-5), while only the two
  // sign patterns with all signs equal reach |sum| = 5 of 2^5: exact randomization p = 2/32 = 0.0625.
  const std::vector<double> a = {0, 0, 0, 0, 0}, b = {0.9, 1, 1.1, 1, 1};
  const PairedTest test = paired_tests(a, b);
  EXPECT_EQ(test.num_queries, 5);
  EXPECT_NEAR(test.mean_difference, 1.0, 1e-12);
  EXPECT_NEAR(test.t, std::sqrt(1000.0), 1e-9);
  EXPECT_LT(test.t_test_p, 1e-5);
  EXPECT_NEAR(test.randomization_p, 0.0625, 0.01);  // Monte Carlo, R = 10,000: sd 0.0024
  EXPECT_GT(test.randomization_p, 0.05);
}

TEST(PairedTests, TiesAreZeroDifferencesThatStayInN) {
  // d = (0, 0, 0, 1, 1, 1): n = 6, mean 0.5, sd sqrt(0.3), t = sqrt(5); the zeros do not move under a flip,
  // so |sum| = 3 needs the three ones to share a sign: exact randomization p = 2/8 = 0.25.
  const std::vector<double> a = {1, 0.5, 0, 0, 0, 0.5}, b = {1, 0.5, 0, 1, 1, 1.5};
  const PairedTest test = paired_tests(a, b);
  EXPECT_EQ(test.num_queries, 6);
  EXPECT_NEAR(test.t, std::sqrt(5.0), 1e-12);
  EXPECT_NEAR(test.t_test_p, student_t_two_sided_p(std::sqrt(5.0), 5), 1e-15);
  EXPECT_NEAR(test.t_test_p, 0.075587, 1e-5);
  EXPECT_NEAR(test.randomization_p, 0.25, 0.02);
  // Differences that cancel, and identical systems: nothing to tell.
  const PairedTest cancel = paired_tests({1, 0.5, 0, 1}, {1, 1, 0, 0.5});
  EXPECT_DOUBLE_EQ(cancel.t_test_p, 1.0);
  EXPECT_DOUBLE_EQ(cancel.randomization_p, 1.0);
  const PairedTest same = paired_tests({1, 0.5, 0}, {1, 0.5, 0});
  EXPECT_DOUBLE_EQ(same.t_test_p, 1.0);
  EXPECT_DOUBLE_EQ(same.randomization_p, 1.0);
}

TEST(PairedTests, FixedSeedGivesTheSameP) {
  const std::vector<double> a = {1, 0, 0.5, 0.2, 1, 0, 0.33, 1}, b = {1, 1, 1, 0.25, 1, 0.5, 0, 1};
  EXPECT_DOUBLE_EQ(paired_tests(a, b).randomization_p, paired_tests(a, b).randomization_p);
  EXPECT_THROW(paired_tests({1, 2}, {1}), Error);
}

TEST(Holm, KnownLists) {
  // Sorted 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop.
  EXPECT_EQ(holm_reject({0.01, 0.04, 0.03, 0.005}), (std::vector<bool>{true, false, false, true}));
  // 0.02 > 0.05/3 stops the procedure, so 0.04 (<= 0.05/1 on its own) is not rejected either.
  EXPECT_EQ(holm_reject({0.02, 0.001, 0.026, 0.04}), (std::vector<bool>{false, true, false, false}));
  EXPECT_EQ(holm_reject({0.01, 0.02, 0.03}), (std::vector<bool>{true, true, true}));
  EXPECT_EQ(holm_reject({0.05}), (std::vector<bool>{true}));
  EXPECT_TRUE(holm_reject({}).empty());
}

TEST(MeanInterval, KnownValues) {
  // 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), half-width t(0.975, 3) * sd / 2 = 2.05426.
  const MeanInterval ci = mean_with_ci95({1, 2, 3, 4});
  EXPECT_DOUBLE_EQ(ci.mean, 2.5);
  EXPECT_NEAR(ci.half_width, 3.182446 * std::sqrt(5.0 / 3.0) / 2, 1e-5);
  EXPECT_NEAR(ci.half_width, 2.05426, 1e-4);
  const MeanInterval one = mean_with_ci95({0.7});
  EXPECT_DOUBLE_EQ(one.mean, 0.7);
  EXPECT_DOUBLE_EQ(one.half_width, 0.0);
  EXPECT_DOUBLE_EQ(mean_with_ci95({0.5, 0.5, 0.5}).half_width, 0.0);
}

}  // namespace
}  // namespace dgr::retrieval
