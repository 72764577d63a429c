// Reads pairs "a b" (one query a line) from stdin and prints dgr's paired tests on them:
// "n mean_difference t t_test_p randomization_p" (for significance_scipy_test.py).
#include <cstdio>
#include <iostream>
#include <vector>

#include "retrieval/significance.h"

int main() {
  std::vector<double> a, b;  // [query]
  for (double x, y; std::cin >> x >> y;) {
    a.push_back(x);
    b.push_back(y);
  }
  const auto test = dgr::retrieval::paired_tests(a, b);
  std::printf("%d %.17g %.17g %.17g %.17g\n", test.num_queries, test.mean_difference, test.t, test.t_test_p,
              test.randomization_p);
  return 0;
}
