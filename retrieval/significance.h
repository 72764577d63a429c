// Paired significance tests between two systems' per-query scores, Holm's correction and the confidence
// interval of a mean over seeds: the definitions of ../shared/docs/method.md section 11. No LibTorch.
#pragma once

#include <cstdint>
#include <vector>

namespace dgr::retrieval {

// Note [Paired tests]: a and b hold one metric's value per query, the same queries in the same order
// (queries with no relevant passage already left out of both). d_q = b_q - a_q; a tie is a zero difference
// and stays in n. Fewer than 2 queries, or every d_q equal to 0, give p = 1 (nothing to tell); every d_q
// equal and non-zero gives t-test p = 0 (as scipy's ttest_rel).
struct PairedTest {
  int num_queries = 0;          // n
  double mean_difference = 0;   // mean(d), b minus a
  double t = 0;                 // mean(d) / (sd(d) / sqrt(n)), sd with n - 1
  double t_test_p = 1;          // two-sided, Student's t with n - 1 degrees of freedom
  double randomization_p = 1;   // (1 + #{|mean(d*)| >= |mean(d)|}) / (R + 1), d* = d with random sign flips
};

struct RandomizationOptions {
  int rounds = 10000;                       // R, the number of sign-flip samples
  std::uint64_t seed = 20240611;            // fixed: the same inputs give the same p
};

// Both tests on the same differences. Throws if a and b differ in length.
PairedTest paired_tests(const std::vector<double>& a, const std::vector<double>& b,
                        const RandomizationOptions& options = {});

// Two-sided p of Student's t statistic with `df` > 0 degrees of freedom: P(|T| >= |t|).
double student_t_two_sided_p(double t, double df);

// The q-quantile (0 < q < 1) of Student's t with `df` > 0 degrees of freedom.
double student_t_quantile(double q, double df);

// The regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1 (continued fraction).
double regularized_incomplete_beta(double x, double a, double b);

// Holm-Bonferroni: [k] true when p[k] is rejected at family-wise level alpha (ascending order, the i-th
// smallest (i from 1) compared with alpha / (K - i + 1), stop at the first failure).
std::vector<bool> holm_reject(const std::vector<double>& p, double alpha = 0.05);

// The mean of values (one per seed) and the half-width of its 95% confidence interval (t with S - 1
// degrees of freedom); half_width is 0 for a single value.
struct MeanInterval {
  double mean = 0;
  double half_width = 0;
};
MeanInterval mean_with_ci95(const std::vector<double>& values);

}  // namespace dgr::retrieval
