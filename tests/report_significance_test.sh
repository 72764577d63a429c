#!/usr/bin/env bash
# `dgr report` on a hand-made data set: without comparisons the table is the one dgr always printed (byte for
# byte); with --compare or --baseline the significant cells carry the comparison's mark and a legend names
# the test, alpha and Holm's K; a system given twice is two seeds (mean ± CI); --out holds the same text;
# unknown names are rejected.
# Usage: report_significance_test.sh DGR
set -euo pipefail
dgr=$1
work=$(mktemp -d /tmp/dgr_report.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 40 dev and 20 test queries, query i relevant to passage p<i>. weak ranks it 5th (1st for every 10th query);
# strong 1st (seed 1: 3rd for i % 7 == 3; seed 2: 2nd for i % 5 == 1). R@5..R@20 are 1 everywhere: ties.
python3 - "$work" <<'PY'
import os, sys
work = sys.argv[1]
os.makedirs(f"{work}/data")
with open(f"{work}/data/corpus.tsv", "w") as f:
    f.write("pid\ttitle\ttext\n")
    for i in range(80):
        f.write(f"p{i}\tpackage {i}\tthe text of package number {i}\n")
splits = {"dev": range(0, 40), "test": range(40, 60)}
for split, ids in splits.items():
    with open(f"{work}/data/queries.{split}.tsv", "w") as f:
        f.write("qid\ttext\n" + "".join(f"q{i}\tquery {i}\n" for i in ids))
    with open(f"{work}/data/qrels.{split}.tsv", "w") as f:
        f.write("qid\tpid\n" + "".join(f"q{i}\tp{i}\n" for i in ids))
def write(name, rank_of):
    for split, ids in splits.items():
        with open(f"{work}/{name}.{split}.trec", "w") as f:
            for i in ids:
                others = [p for p in range(60, 80)][:9]
                order = others[:rank_of(i) - 1] + [i] + others[rank_of(i) - 1:]
                for r, p in enumerate(order):
                    f.write(f"q{i} Q0 p{p} {r + 1} {100 - r} {name}\n")
write("weak", lambda i: 1 if i % 10 == 0 else 5)
write("strong1", lambda i: 3 if i % 7 == 3 else 1)
write("strong2", lambda i: 2 if i % 5 == 1 else 1)
PY

report() { "$dgr" report --data "$work/data" --split dev --split test "$@"; }

# 1. No comparison, one run per system: the table as before, nothing else.
report --system "weak=$work/weak.{split}.trec" --system "strong=$work/strong1.{split}.trec" > "$work/plain.txt"
cat > "$work/expected.txt" <<'TXT'
| system | split | queries | R@1 | R@5 | R@10 | R@20 | MRR@10 |
|---|---|---:|---:|---:|---:|---:|---:|
| weak | dev | 40 | 0.100 | 1.000 | 1.000 | 1.000 | 0.280 |
| weak | test | 20 | 0.100 | 1.000 | 1.000 | 1.000 | 0.280 |
| weak | dev+test | 60 | 0.100 | 1.000 | 1.000 | 1.000 | 0.280 |
| strong | dev | 40 | 0.850 | 1.000 | 1.000 | 1.000 | 0.900 |
| strong | test | 20 | 0.850 | 1.000 | 1.000 | 1.000 | 0.900 |
| strong | dev+test | 60 | 0.850 | 1.000 | 1.000 | 1.000 | 0.900 |
TXT
diff "$work/expected.txt" "$work/plain.txt" || fail "the table without comparisons changed"

# 2. strong with two seeds against weak: R@1 and MRR@10 marked on every row, the tied R@5..R@20 never.
report --system "weak=$work/weak.{split}.trec" --system "strong=$work/strong1.{split}.trec" \
       --system "strong=$work/strong2.{split}.trec" --compare strong:weak --out "$work/report.md" > "$work/cmp.txt"
cat "$work/cmp.txt"
cmp "$work/cmp.txt" "$work/report.md" || fail "--out differs from the printed report"
for row in dev test dev+test; do
  line=$(grep "^| strong | $row |" "$work/cmp.txt")
  python3 - "$line" <<'PY' || fail "strong $row: $line"
import sys
cells = [c.strip() for c in sys.argv[1].strip("|").split("|")]
r1, r5, r10, r20, mrr = cells[3:]
assert r1.endswith("†") and mrr.endswith("†"), (r1, mrr)
assert not any(c.endswith("†") for c in (r5, r10, r20)), (r5, r10, r20)
assert "±" in r1 and "±" in mrr, (r1, mrr)
PY
  grep "^| weak | $row |" "$work/cmp.txt" | grep -q "[†±]" && fail "weak $row carries a mark or a CI"
done
grep -q "^† strong against weak: .*randomization test (10000 sign flips, fixed seed), alpha 0.05, Holm-Bonferroni over the K = 15 tests" "$work/cmp.txt" \
  || fail "legend of the comparison missing"
grep -q "seeds S: weak 1, strong 2" "$work/cmp.txt" || fail "seed legend missing"

# 3. --baseline weak is --compare strong:weak; the t-test marks the same cells here.
report --system "weak=$work/weak.{split}.trec" --system "strong=$work/strong1.{split}.trec" \
       --system "strong=$work/strong2.{split}.trec" --baseline weak > "$work/baseline.txt"
cmp "$work/cmp.txt" "$work/baseline.txt" || fail "--baseline weak differs from --compare strong:weak"
report --system "weak=$work/weak.{split}.trec" --system "strong=$work/strong1.{split}.trec" \
       --compare strong:weak --test t > "$work/t.txt"
grep -q "^| strong | dev | 40 | 0.850† | 1.000 | 1.000 | 1.000 | 0.900† |" "$work/t.txt" || fail "t-test marks"
grep -q "two-sided paired t-test, alpha 0.05" "$work/t.txt" || fail "t-test legend"

# --p-values lists the K = 15 tests; the tied R@5 rows have zero difference and p = 1.
report --system "weak=$work/weak.{split}.trec" --system "strong=$work/strong1.{split}.trec" \
       --compare strong:weak --p-values > "$work/p.txt"
[[ $(grep -c "^| † strong against weak |" "$work/p.txt") == 15 ]] || fail "--p-values: expected 15 test lines"
grep -q "^| † strong against weak | dev | R@5 | 40 | +0.0000 | 1 | 1 | no |" "$work/p.txt" || fail "tied R@5 line"
grep -q "^| † strong against weak | dev | R@1 | 40 | +0.7500 | .* | yes |" "$work/p.txt" || fail "R@1 line"

# 4. Names that are not systems are rejected, naming the systems there are.
if report --system "weak=$work/weak.{split}.trec" --compare strong:weak > "$work/err.txt" 2>&1; then
  fail "--compare with an unknown system was accepted"
fi
grep -q "no system named 'strong'.*'weak'" "$work/err.txt" || { cat "$work/err.txt"; fail "unclear error"; }
echo "report_significance: all checks passed"
