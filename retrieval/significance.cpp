// Paired t-test, paired randomization test, Holm-Bonferroni and the t confidence interval (Note [Paired
// tests] in significance.h; ../shared/docs/method.md section 11).
#include "retrieval/significance.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "common/error.h"

namespace dgr::retrieval {
namespace {

// The continued fraction of I_x(a, b) (modified Lentz; Numerical Recipes' betacf), good for x < (a+1)/(a+b+2).
double incomplete_beta_fraction(double x, double a, double b) {
  constexpr double kTiny = 1e-300, kEps = 1e-15;
  const double qab = a + b, qap = a + 1, qam = a - 1;
  double c = 1, d = 1 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 10000; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1) < kEps) break;
  }
  return h;
}

double mean_of(const std::vector<double>& values) {
  return values.empty() ? 0 : std::accumulate(values.begin(), values.end(), 0.0) / values.size();
}

// Sample standard deviation (n - 1).
double sd_of(const std::vector<double>& values, double mean) {
  double ss = 0;
  for (double v : values) ss += (v - mean) * (v - mean);
  return values.size() < 2 ? 0 : std::sqrt(ss / (values.size() - 1));
}

// (1 + #{|sum(d*)| >= |sum(d)|}) / (R + 1); sums instead of means (same n), compared with a tolerance far
// below any gap between two distinct sums of metric values, so a flip that gives the same sum counts.
double randomization_p(const std::vector<double>& d, const RandomizationOptions& options) {
  double observed = 0, magnitude = 0;
  for (double v : d) {
    observed += v;
    magnitude += std::fabs(v);
  }
  const double threshold = std::fabs(observed) - 1e-10 * magnitude;
  std::mt19937_64 rng(options.seed);
  long long at_least_as_extreme = 0;
  for (int r = 0; r < options.rounds; ++r) {
    double sum = 0;
    std::uint64_t bits = 0;
    for (size_t i = 0; i < d.size(); ++i) {
      if (i % 64 == 0) bits = rng();
      sum += (bits & 1) ? -d[i] : d[i];
      bits >>= 1;
    }
    at_least_as_extreme += std::fabs(sum) >= threshold;
  }
  return (1.0 + at_least_as_extreme) / (options.rounds + 1.0);
}

}  // namespace

double regularized_incomplete_beta(double x, double a, double b) {
  DGR_CHECK(a > 0 && b > 0 && x >= 0 && x <= 1, "incomplete beta: need a, b > 0 and 0 <= x <= 1, got x={} a={} b={}",
            x, a, b);
  if (x == 0 || x == 1) return x;
  const double front =
      std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return front * incomplete_beta_fraction(x, a, b) / a;
  return 1 - front * incomplete_beta_fraction(1 - x, b, a) / b;
}

double student_t_two_sided_p(double t, double df) {
  DGR_CHECK(df > 0, "Student's t needs df > 0, got {}", df);
  if (std::isinf(t)) return 0;
  return regularized_incomplete_beta(df / (df + t * t), df / 2, 0.5);
}

double student_t_quantile(double q, double df) {
  DGR_CHECK(q > 0 && q < 1 && df > 0, "t quantile: need 0 < q < 1 and df > 0, got q={} df={}", q, df);
  if (q == 0.5) return 0;
  const double target = 2 * std::min(q, 1 - q);  // two-sided p of the quantile's magnitude
  double lo = 0, hi = 1;
  while (student_t_two_sided_p(hi, df) > target) hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 1e-14 * hi; ++i) {
    const double mid = (lo + hi) / 2;
    (student_t_two_sided_p(mid, df) > target ? lo : hi) = mid;
  }
  const double t = (lo + hi) / 2;
  return q > 0.5 ? t : -t;
}

PairedTest paired_tests(const std::vector<double>& a, const std::vector<double>& b,
                        const RandomizationOptions& options) {
  DGR_CHECK(a.size() == b.size(), "paired test: {} values against {} (the same queries are needed)", a.size(),
            b.size());
  DGR_CHECK(options.rounds >= 1, "paired test: rounds must be at least 1, got {}", options.rounds);
  PairedTest out;
  out.num_queries = static_cast<int>(a.size());
  std::vector<double> d(a.size());  // [query] b - a
  for (size_t i = 0; i < a.size(); ++i) d[i] = b[i] - a[i];
  out.mean_difference = mean_of(d);
  const bool all_zero = std::all_of(d.begin(), d.end(), [](double v) { return v == 0; });
  if (d.size() < 2 || all_zero) return out;
  const double sd = sd_of(d, out.mean_difference);
  const double n = static_cast<double>(d.size());
  out.t = sd > 0 ? out.mean_difference / (sd / std::sqrt(n)) : std::copysign(INFINITY, out.mean_difference);
  out.t_test_p = student_t_two_sided_p(out.t, n - 1);
  out.randomization_p = randomization_p(d, options);
  return out;
}

std::vector<bool> holm_reject(const std::vector<double>& p, double alpha) {
  std::vector<size_t> order(p.size());  // [i-th smallest] index into p
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return p[x] < p[y]; });
  std::vector<bool> reject(p.size(), false);
  const size_t k = p.size();
  for (size_t i = 0; i < k; ++i) {
    if (!(p[order[i]] <= alpha / static_cast<double>(k - i))) break;
    reject[order[i]] = true;
  }
  return reject;
}

MeanInterval mean_with_ci95(const std::vector<double>& values) {
  DGR_CHECK(!values.empty(), "a confidence interval needs at least one value");
  MeanInterval out;
  out.mean = mean_of(values);
  if (values.size() < 2) return out;
  const double s = static_cast<double>(values.size());
  out.half_width = student_t_quantile(0.975, s - 1) * sd_of(values, out.mean) / std::sqrt(s);
  return out;
}

}  // namespace dgr::retrieval
