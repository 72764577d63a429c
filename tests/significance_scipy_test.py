#!/usr/bin/python3
"""dgr's paired t-test and randomization test (tests/significance_driver) against scipy on per-query scores
shaped like dgr's: R@k in {0, 1} and MRR@10 in {0, 1/10 .. 1}, many ties. Exit 77 (skipped) without scipy.
The t-test p must equal scipy.stats.ttest_rel's; the randomization p (Monte Carlo, R = 10,000) must lie
within 4 standard errors of scipy.stats.permutation_test's (exact for n <= 16, else 50,000 resamples)
and, for small n, of an exact enumeration of the 2^n sign patterns."""
import itertools
import warnings
import math
import random
import subprocess
import sys

try:
    import numpy as np
    from scipy import stats
except ImportError as e:
    print(f"skipped: /usr/bin/python3 cannot import scipy ({e}); apt-get install python3-scipy")
    sys.exit(77)
if not hasattr(stats, "permutation_test"):
    print(f"skipped: scipy {__import__('scipy').__version__} has no permutation_test (needs 1.8)")
    sys.exit(77)

DRIVER = sys.argv[1]
warnings.filterwarnings("ignore", category=RuntimeWarning)  # scipy 1.10 computes 2^n as a float for large n
ROUNDS = 10000
REF_RESAMPLES = 50000  # scipy's Monte Carlo resamples for n > 16, in batches of 1000 (memory)


def first_relevant_ranks(rng, n, hit_rate, base=None, improve=0.0):
    """Rank (1..100) of each query's relevant passage, or 0 when not retrieved; B improves A's ranks."""
    ranks = []
    for q in range(n):
        if base is not None:
            r = base[q]
            if rng.random() < improve:
                r = 1 if r == 0 else max(1, r - rng.randint(1, 3))
            elif rng.random() < improve / 3:
                r = 0 if r > 5 else r + 1
            ranks.append(r)
        else:
            ranks.append(min(100, int(rng.expovariate(0.5)) + 1) if rng.random() < hit_rate else 0)
    return ranks


def metric(ranks, name):
    if name == "MRR@10":
        return [1.0 / r if 0 < r <= 10 else 0.0 for r in ranks]
    k = int(name.split("@")[1])
    return [1.0 if 0 < r <= k else 0.0 for r in ranks]


def dgr_tests(a, b):
    text = "".join(f"{x!r} {y!r}\n" for x, y in zip(a, b))
    out = subprocess.run([DRIVER], input=text, capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2]), float(out[3]), float(out[4])


def exact_enumeration_p(d):
    observed = abs(sum(d))
    tol = 1e-10 * sum(abs(x) for x in d)
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= observed - tol
               for signs in itertools.product((1, -1), repeat=len(d)))
    return hits / 2 ** len(d)


def check(label, a, b, failures):
    n, mean_d, t, t_p, rand_p = dgr_tests(a, b)
    d = np.array(b) - np.array(a)
    assert n == len(a), (label, n)
    if not math.isclose(mean_d, d.mean(), rel_tol=1e-12, abs_tol=1e-15):
        failures.append(f"{label}: mean difference {mean_d} vs {d.mean()}")
    if np.all(d == 0):
        ref_t_p = 1.0  # scipy: nan (0/0); dgr: nothing to tell
    else:
        ref_t_p = float(stats.ttest_rel(b, a).pvalue)
    if not math.isclose(t_p, ref_t_p, rel_tol=1e-8, abs_tol=1e-14):
        failures.append(f"{label}: t-test p {t_p!r} vs scipy ttest_rel {ref_t_p!r}")
    resamples = 2 ** len(d) if len(d) <= 16 else REF_RESAMPLES
    ref = stats.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                 vectorized=True, n_resamples=resamples, batch=1000, alternative="two-sided",
                                 random_state=np.random.default_rng(7))
    ref_p = min(1.0, float(ref.pvalue))
    var = max(ref_p * (1 - ref_p), 1e-4)
    se = math.sqrt(var / ROUNDS) + (0 if len(d) <= 16 else math.sqrt(var / REF_RESAMPLES))
    if abs(rand_p - ref_p) > 4 * se + 1.0 / (ROUNDS + 1):
        failures.append(f"{label}: randomization p {rand_p} vs scipy permutation_test {ref_p} (4 se = {4 * se:.4f})")
    if len(d) <= 16:
        exact = exact_enumeration_p(list(d))
        if abs(rand_p - exact) > 4 * math.sqrt(max(exact * (1 - exact), 1e-4) / ROUNDS) + 1.0 / (ROUNDS + 1):
            failures.append(f"{label}: randomization p {rand_p} vs exact enumeration {exact}")
    print(f"{label:34s} n={n:4d} mean_d={mean_d:+.4f} t_p={t_p:.6g} (scipy {ref_t_p:.6g}) "
          f"rand_p={rand_p:.4f} (scipy {ref_p:.4f})")


def main():
    rng = random.Random(18)
    failures = []
    for n, improve in [(12, 0.3), (14, 0.0), (16, 0.6), (49, 0.15), (300, 0.05), (300, 0.2), (2000, 0.02)]:
        a_ranks = first_relevant_ranks(rng, n, hit_rate=0.75)
        b_ranks = first_relevant_ranks(rng, n, 0.75, base=a_ranks, improve=improve)
        for name in ["R@1", "R@5", "MRR@10"]:
            check(f"n={n} improve={improve} {name}", metric(a_ranks, name), metric(b_ranks, name), failures)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("all p-values agree with scipy", stats.__name__, __import__("scipy").__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
