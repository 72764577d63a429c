#!/usr/bin/env bash
# `dgr teacher import` and `dgr teacher bm25` on a small hand-made mined directory (the documented format of
# docs/distillation.md, no model needed). Accepted: a run written the way other IR systems write them
# (Anserini-style tag, tabs and runs of spaces, queries in another order, exponent and signed scores), the
# dgr BM25 teacher's run, a run lacking candidates with --missing last. Rejected with the file:line and what
# to do: unknown query, passage not in the corpus, passage not a candidate, duplicate, wrong column count,
# non-numeric score, ranks against scores, missing candidates without --missing last, a changed mined file.
# Usage: teacher_import_test.sh DGR
set -euo pipefail
dgr=$1
work=$(mktemp -d /tmp/dgr_teacher.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

python3 - "$work" <<'PY'
import hashlib, json, os, sys
work = sys.argv[1]
data, index, mined = (os.path.join(work, d) for d in ("data", "index", "mined"))
for d in (data, index, mined):
    os.makedirs(d)
words = ["kernel", "driver", "audio", "video", "font", "shell", "parser", "image", "viewer", "backup", "mail", "game"]
pids = [f"p{i}" for i in range(12)]
with open(os.path.join(data, "corpus.tsv"), "w") as f:
    f.write("pid\ttitle\ttext\n")
    for i, pid in enumerate(pids):
        f.write(f"{pid}\t{words[i]} tool\t{words[i]} {words[(i + 1) % 12]} support for the {words[i]} system\n")
with open(os.path.join(index, "pids.txt"), "w") as f:
    f.write("\n".join(pids) + "\n")
queries = {"q1": ("kernel driver", ["p0", "p1", "p2", "p3", "p4"]),
           "q2": ("audio video", ["p2", "p3", "p5", "p6", "p7"]),
           "q3": ("mail backup", ["p10", "p9", "p8", "p1", "p0"])}
lines = []
for qid, (text, cands) in queries.items():
    cs = []
    for r, pid in enumerate(cands):
        keys = [] if r == 2 else [{"text": words[int(pid[1:])], "tokens": [10 + r, 11], "view": "body", "count": 2,
                                   "score": -1.5}]
        cs.append({"pid": pid, "doc": int(pid[1:]), "rank": r + 1, "score": 50.0 - 3 * r, "positive": r == 1,
                   "keys": keys})
    lines.append(json.dumps({"qid": qid, "query": text, "query_tokens": [5, 6], "candidates": cs}))
with open(os.path.join(mined, "candidates.jsonl"), "w") as f:
    f.write("\n".join(lines) + "\n")
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
manifest = {"format": "dgr-mined", "version": 1, "split": "train",
            "model": {"path": "model.h5", "sha256": "0" * 64},
            "index": {"dir": index, "tokenizer_sha256": "t", "fm_index_sha256": "f",
                      "pids_sha256": sha(os.path.join(index, "pids.txt"))},
            "retrieval": {"max_keys": 40},
            "counts": {"queries": 3},
            "files": {"candidates.jsonl": {"sha256": sha(os.path.join(mined, "candidates.jsonl"))}}}
json.dump(manifest, open(os.path.join(mined, "manifest.json"), "w"), indent=2)
PY
mined=$work/mined

# Checks that OUT is a normalized teacher run over exactly the mined candidates: ranks 1..n per query,
# scores that never increase with rank, and optionally the expected order of one query ("q1:p3,p0,...").
check_normalized() {
  python3 - "$mined/candidates.jsonl" "$1" "${2:-}" <<'PY'
import json, sys
cands = {}
for line in open(sys.argv[1]):
    q = json.loads(line)
    cands[q["qid"]] = {c["pid"] for c in q["candidates"]}
got = {}
for line in open(sys.argv[2]):
    qid, q0, pid, rank, score, tag = line.split()
    got.setdefault(qid, []).append((int(rank), float(score), pid))
assert set(got) == set(cands), (sorted(got), sorted(cands))
for qid, rows in got.items():
    rows.sort()
    assert [r for r, _, _ in rows] == list(range(1, len(rows) + 1)), (qid, rows)
    assert {p for _, _, p in rows} == cands[qid], (qid, rows)
    assert all(rows[i][1] >= rows[i + 1][1] for i in range(len(rows) - 1)), (qid, rows)
if sys.argv[3]:
    qid, order = sys.argv[3].split(":")
    assert [p for _, _, p in sorted(got[qid])] == order.split(","), (qid, sorted(got[qid]))
PY
}

# expect_reject NAME RUN_CONTENT EXPECTED_SUBSTRING... : import fails with exit 1, names the file, no output.
expect_reject() {
  local name=$1 content=$2; shift 2
  printf '%b' "$content" > "$work/$name.trec"
  set +e
  "$dgr" teacher import --mined "$mined" --run "$work/$name.trec" --out "$work/$name.out.trec" > "$work/$name.log" 2>&1
  local rc=$?
  set -e
  [[ $rc -eq 1 ]] || { cat "$work/$name.log"; fail "$name: exit $rc, expected 1"; }
  for expected in "$@"; do
    grep -qF -- "$expected" "$work/$name.log" || { cat "$work/$name.log"; fail "$name: no '$expected' in the error"; }
  done
  [[ ! -e $work/$name.out.trec ]] || fail "$name: a rejected run still wrote its output"
  echo "rejected as expected: $name: $(grep -o "$name.trec[^ ]*.*" "$work/$name.log" | head -1 | cut -c1-160)"
}

# --- accepted -----------------------------------------------------------------------------------------
# Anserini-style: queries in another order, tabs and several spaces, exponents, a '+' sign, negative scores.
printf '%b' \
  "q3 Q0 p8 1 1.5e+01 Anserini\nq3\tQ0\tp10\t2\t12.345600\tAnserini\nq3 Q0  p0 3 +3 Anserini\n" \
  "q3 Q0 p1 4 -0.5 Anserini\nq3 Q0 p9 5 -2.25E0 Anserini\n\n" \
  "q1 Q0 p3 1 9.1 Anserini\nq1 Q0 p0 2 9.1 Anserini\nq1 Q0 p4 3 7 Anserini\nq1 Q0 p2 4 1 Anserini\nq1 Q0 p1 5 0 Anserini\n" \
  "q2 0 p7 1 0.99 Anserini\nq2 0 p6 2 0.5 Anserini\nq2 0 p5 3 0.25 Anserini\nq2 0 p3 4 0.125 Anserini\nq2 0 p2 5 0.0625 Anserini\n" \
  > "$work/anserini.trec"
"$dgr" teacher import --mined "$mined" --run "$work/anserini.trec" --out "$work/anserini.out.trec"
check_normalized "$work/anserini.out.trec" "q1:p3,p0,p4,p2,p1" || fail "normalized Anserini-style run"
check_normalized "$work/anserini.out.trec" "q3:p8,p10,p0,p1,p9" || fail "normalized Anserini-style run (q3)"
[[ $(head -1 "$work/anserini.out.trec" | cut -d' ' -f1) == q1 ]] || fail "normalized run not in mined query order"
grep -q " Anserini$" "$work/anserini.out.trec" || fail "the tag of the imported run was not kept"

# The built-in BM25 teacher, and its run imported again: the same file.
"$dgr" teacher bm25 --mined "$mined" --data "$work/data" --out "$work/bm25.trec" | tee "$work/bm25.log"
check_normalized "$work/bm25.trec" || fail "BM25 teacher run"
"$dgr" teacher import --mined "$mined" --run "$work/bm25.trec" --out "$work/bm25.out.trec"
cmp "$work/bm25.trec" "$work/bm25.out.trec" || fail "importing the BM25 teacher run changed it"
# q1 = "kernel driver": p0 (kernel) and p1 (driver) match, p2..p4 share no term and follow in retriever order.
python3 - "$work/bm25.trec" <<'PY' || fail "BM25 teacher order"
import sys
rows = sorted((int(l.split()[3]), l.split()[2], float(l.split()[4])) for l in open(sys.argv[1]) if l.startswith("q1 "))
pids = [p for _, p, _ in rows]
assert set(pids[:2]) == {"p0", "p1"} and pids[2:] == ["p2", "p3", "p4"], rows
assert rows[2][2] < rows[1][2], rows
PY

# Missing candidates with --missing last: ranked after the scored ones, in retriever order, and logged.
printf 'q1 Q0 p4 1 3 x\nq1 Q0 p2 2 2 x\nq1 Q0 p3 3 1 x\n' > "$work/partial.trec"
cat "$work/anserini.trec" | grep -v '^q1' >> "$work/partial.trec"
"$dgr" teacher import --mined "$mined" --run "$work/partial.trec" --out "$work/partial.out.trec" --missing last \
  > "$work/partial.log" 2>&1 || { cat "$work/partial.log"; fail "--missing last"; }
grep -q "2 mined candidates in 1 queries are not in the run" "$work/partial.log" || { cat "$work/partial.log"; fail "no warning"; }
check_normalized "$work/partial.out.trec" "q1:p4,p2,p3,p0,p1" || fail "--missing last order"

# A teacher over its own top k and more queries (pyserini's run of BM25 over the corpus): with --extra ignore the
# passages that are not candidates and the query that was not mined are skipped and counted, and what remains
# is the same teacher run as without them.
cp "$work/anserini.trec" "$work/own-topk.trec"
printf 'q1 Q0 p11 90 -50 x\nq1 Q0 p10 91 -51 x\nq9 Q0 p0 1 9 x\n' >> "$work/own-topk.trec"
"$dgr" teacher import --mined "$mined" --run "$work/anserini.trec" --out "$work/clean.out.trec" > /dev/null
"$dgr" teacher import --mined "$mined" --run "$work/own-topk.trec" --out "$work/extra.out.trec" --extra ignore \
  > "$work/extra.log" 2>&1 || { cat "$work/extra.log"; fail "--extra ignore"; }
grep -q "3 entries ignored (--extra ignore): 1 of queries that were not mined, 2 of passages" "$work/extra.log" ||
  { cat "$work/extra.log"; fail "--extra ignore did not count the skipped entries"; }
cmp "$work/clean.out.trec" "$work/extra.out.trec" || fail "--extra ignore changed the teacher run"
set +e
"$dgr" teacher import --mined "$mined" --run "$work/own-topk.trec" --out "$work/extra2.out.trec" > "$work/extra2.log" 2>&1
rc=$?
set -e
[[ $rc -eq 1 ]] && grep -q "pass --extra ignore" "$work/extra2.log" && [[ ! -e $work/extra2.out.trec ]] ||
  { cat "$work/extra2.log"; fail "a run with extra entries was accepted without --extra ignore"; }

# --- rejected -----------------------------------------------------------------------------------------
good_q1='q1 Q0 p3 1 9 a\nq1 Q0 p0 2 8 a\nq1 Q0 p4 3 7 a\nq1 Q0 p2 4 6 a\nq1 Q0 p1 5 5 a\n'
expect_reject unknown_query "q1 Q0 p3 1 9 a\nq9 Q0 p0 1 8 a\n" "unknown_query.trec:2:" "query 'q9' was not mined"
expect_reject unknown_pid "q1 Q0 p3 1 9 a\n\nq1 Q0 zzz 2 8 a\n" "unknown_pid.trec:3:" "passage 'zzz' is not in the corpus"
expect_reject not_a_candidate "${good_q1}q2 Q0 p11 1 9 a\n" "not_a_candidate.trec:6:" \
  "passage 'p11' is not among the 5 mined candidates of query 'q2'" "candidates.tsv"
expect_reject duplicate "q1 Q0 p3 1 9 a\nq1 Q0 p3 2 8 a\n" "duplicate.trec:2:" "ranked twice"
expect_reject columns "q1 Q0 p3 1 9\n" "columns.trec:1:" "expected 6"
expect_reject score "q1 Q0 p3 1 high a\n" "score.trec:1:" "'high' is not a number"
expect_reject order "q1 Q0 p3 1 1 a\nq1 Q0 p0 2 5 a\n" "order.trec:2:" "ranks must follow scores"
expect_reject incomplete "${good_q1}q2 Q0 p2 1 1 a\n" "incomplete.trec:" \
  "mined candidates of 2 queries are not in the run" "--missing last"
expect_reject empty "" "empty.trec" "found no run lines"

# A mined file changed after mining: its checksum no longer matches the manifest.
printf '\n' >> "$mined/candidates.jsonl"
set +e
"$dgr" teacher import --mined "$mined" --run "$work/anserini.trec" --out "$work/x.trec" > "$work/changed.log" 2>&1
rc=$?
set -e
[[ $rc -eq 1 ]] && grep -q "candidates.jsonl: sha256 .* does not match" "$work/changed.log" || { cat "$work/changed.log"; fail "changed mined file"; }
echo "ok"
