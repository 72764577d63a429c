#!/usr/bin/env bash
# `dgr evaluate` against trec_eval's own code (pytrec_eval) on runs with ties: a foreign run full of tied
# scores whose rank column disagrees with trec_eval's tie order (ties by pid descending), graded qrels, a
# judged query missing from the run; and a run dgr wrote itself (`dgr bm25`). Every metric of every query
# (--per-query) must equal pytrec_eval's: R@k = recall_k, MRR@10 = recip_rank when the rank is <= 10,
# nDCG@10 = ndcg_cut_10 with gains 2^grade - 1 (trec_eval's gain is the grade: the qrels it is given are
# mapped). Usage: evaluate_trec_eval_test.sh DGR
# Exit 77 (skipped under CTest) without the virtual environment of scripts/install-deps.sh (DGR_VENV,
# default /opt/dgr-venv) or without pytrec_eval in it.
set -euo pipefail
dgr=$1
here=$(cd "$(dirname "$0")" && pwd)
python=${DGR_VENV:-/opt/dgr-venv}/bin/python
if [[ ! -x $python ]] || ! "$python" -I -c 'import pytrec_eval' 2>/dev/null; then
  echo "SKIP: $python cannot import pytrec_eval: run scripts/install-deps.sh (it pip-installs it into a venv)"
  exit 77
fi
work=$(mktemp -d /tmp/dgr_evaluate_trec_eval.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A run with ties (deterministic): scores from a few values, some equal only as 32-bit floats; ranks that
# follow the scores but order each tie at random; pids of mixed case and one beyond ASCII.
"$python" -I - "$work" <<'EOF'
import random, sys
work = sys.argv[1]
rng = random.Random(18)
pids = [f"p{i:03d}" for i in range(150)] + ["P007", "Pa", "pé1", "p-z"]
values = [12.5, 12.5, 9.0, 7.25, 30.1234561, 30.1234562, 3.0, 0.0, -1.5]
with open(f"{work}/ties.trec", "w") as run, open(f"{work}/ties-reordered.trec", "w") as other, \
        open(f"{work}/qrels.txt", "w") as qrels:
    for q in range(40):
        qid = f"q{q}"
        chosen = rng.sample(pids, rng.choice([1, 5, 12, 30, 120]))
        scored = [(rng.choice(values), rng.random(), pid) for pid in chosen]
        scored.sort(key=lambda s: (-s[0], s[1]))  # ties in random order
        if q != 7:  # q7 is judged but has no run entry
            for rank, (score, _, pid) in enumerate(scored, 1):
                run.write(f"{qid} Q0 {pid} {rank} {score!r} foreign\n")
            # The same scores, each tie ranked in the reverse order, the lines shuffled.
            lines = [f"{qid} Q0 {pid} {rank} {score!r} foreign\n"
                     for rank, (score, _, pid) in enumerate(sorted(scored, key=lambda s: (-s[0], -s[1])), 1)]
            rng.shuffle(lines)
            other.writelines(lines)
        judged = rng.sample(chosen, min(len(chosen), rng.randint(1, 6))) + rng.sample(pids, 2)
        grades = {pid: rng.choice([0, 1, 1, 2, 3]) for pid in judged}
        grades[judged[0]] = max(1, grades[judged[0]])  # at least one relevant passage
        for pid, g in grades.items():
            qrels.write(f"{qid} 0 {pid} {g}\n")
EOF

compare() {  # RUN QRELS PER_QUERY_TSV
  "$python" -I - "$@" <<'EOF'
import math, sys
import pytrec_eval
run_path, qrels_path, per_query_path = sys.argv[1:4]
run, qrels = {}, {}
for line in open(run_path, encoding="utf-8"):
    qid, _, pid, _, score, _ = line.split()
    run.setdefault(qid, {})[pid] = float(score)
for line in open(qrels_path, encoding="utf-8"):
    qid, _, pid, grade = line.split()
    qrels.setdefault(qid, {})[pid] = 2 ** int(grade) - 1  # dgr's gain; relevant iff > 0 either way
ks = (1, 5, 10, 20, 100)
measures = {"recall." + ",".join(map(str, ks)), "recip_rank", "ndcg_cut.10"}
theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
rows = [line.rstrip("\n").split("\t") for line in open(per_query_path, encoding="utf-8")]
header = rows[0]
ours = {r[0]: dict(zip(header[1:], map(float, r[1:]))) for r in rows[1:]}
assert header[0] == "qid" and len(header) == 8, header
errors, compared = [], 0
for qid, mine in ours.items():
    if qid not in theirs:  # judged, not in the run: dgr scores 0 (trec_eval -c)
        if qid in run or any(mine.values()):
            errors.append(f"{qid}: not evaluated by pytrec_eval, dgr gives {mine}")
        continue
    t = theirs[qid]
    expected = {f"R@{k}": t[f"recall_{k}"] for k in ks}
    expected["MRR@10"] = t["recip_rank"] if t["recip_rank"] >= 0.1 - 1e-12 else 0.0
    expected["nDCG@10"] = t["ndcg_cut_10"]
    for name, value in expected.items():
        compared += 1
        if not math.isclose(mine[name], value, rel_tol=1e-9, abs_tol=1e-12):
            errors.append(f"{qid} {name}: dgr {mine[name]} pytrec_eval {value}")
if set(theirs) - set(ours):
    errors.append(f"queries pytrec_eval evaluated but dgr did not: {sorted(set(theirs) - set(ours))}")
print(f"{per_query_path}: {len(ours)} queries, {compared} values compared with pytrec_eval, {len(errors)} differ")
for e in errors[:20]:
    print("  " + e)
sys.exit(1 if errors else 0)
EOF
}

"$dgr" evaluate --run "$work/ties.trec" --qrels "$work/qrels.txt" --per-query "$work/ties.tsv"
compare "$work/ties.trec" "$work/qrels.txt" "$work/ties.tsv"
# The rank column and the line order do not matter: the same scores ranked otherwise score the same.
"$dgr" evaluate --run "$work/ties-reordered.trec" --qrels "$work/qrels.txt" --per-query "$work/reordered.tsv"
cmp "$work/ties.tsv" "$work/reordered.tsv"

# A run dgr wrote: `dgr bm25` on the synthetic data set; its printed figures (from the run in memory) equal
# `dgr evaluate`'s of the file, and both equal pytrec_eval's.
mkdir -p "$work/data"
/usr/bin/python3 -I "$here/synthetic_data.py" "$work/data"
printed=$("$dgr" bm25 --data "$work/data" --split test --out "$work/bm25.trec" | sed 's/^bm25 test ([^)]*): //')
evaluated=$("$dgr" evaluate --run "$work/bm25.trec" --qrels "$work/data/qrels.test.tsv" --per-query "$work/bm25.tsv" \
            | sed 's/^[^:]*: //')
if [[ "$printed" != "$evaluated" ]]; then
  echo "FAIL: dgr bm25 printed '$printed' but dgr evaluate of its file gives '$evaluated'"
  exit 1
fi
awk -F'\t' 'NR > 1 { print $1, 0, $2, $3 }' "$work/data/qrels.test.tsv" > "$work/qrels.test.txt"
compare "$work/bm25.trec" "$work/qrels.test.txt" "$work/bm25.tsv"
echo "evaluate_trec_eval: ok"
