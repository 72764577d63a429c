#!/usr/bin/env bash
# The commands of docs/walkthrough.md on small synthetic files in the field's own formats (the real data cannot
# be fetched here): datasets/debian-tiny rewritten as
#  - MS MARCO passage: collection.tsv (pid<TAB>text, no header, no titles), queries.train.tsv and
#    queries.dev.small.tsv (qid<TAB>text, no header), qrels.*.tsv in TREC's `qid 0 pid 1` with tabs, and a
#    pyserini-style teacher run (a cross-encoder over its own BM25 top-k: passages that are not mined
#    candidates, imported with --extra ignore);
#  - NQ in DPR's layout: psgs_w100.tsv (id<TAB>text<TAB>title header, csv-quoted fields) and nq-train.json /
#    nq-dev.json (questions with positive_ctxs).
# Each goes through data check, index, BM25, a short stage 1, retrieve (MS MARCO at depth 1000 with R@1000),
# mine, teacher, prepare. Malformed variants (a DPR file that is not an array, a positive without passage id,
# passage ids that are not in the corpus) are refused naming the file.
# Usage: formats_walkthrough_test.sh DGR DATA_DIR (datasets/debian-tiny)
set -euo pipefail
dgr=$1; tiny=$2
work=$(mktemp -d /tmp/dgr_walkthrough.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

python3 - "$tiny" "$work" <<'PY'
import csv, json, os, sys
tiny, work = sys.argv[1], sys.argv[2]
rows = list(csv.reader(open(f"{tiny}/corpus.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
ids = {r[0]: str(i + 1000) for i, r in enumerate(rows)}  # numeric ids, as both collections use
def queries(split):
    return list(csv.reader(open(f"{tiny}/queries.{split}.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
def qrels(split):
    return list(csv.reader(open(f"{tiny}/qrels.{split}.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
# MS MARCO passage
m = f"{work}/msmarco"; os.makedirs(m)
with open(f"{m}/collection.tsv", "w", encoding="utf-8") as f:
    for r in rows: f.write(f"{ids[r[0]]}\t{r[1]} {r[2]}\n")
for split, name in (("train", "train"), ("dev", "dev.small")):
    qid = {q[0]: str(5000 + i + (0 if split == "train" else 1000)) for i, q in enumerate(queries(split))}
    with open(f"{m}/queries.{name}.tsv", "w", encoding="utf-8") as f:
        for q in queries(split): f.write(f"{qid[q[0]]}\t{q[1]}\n")
    with open(f"{m}/qrels.{name}.tsv", "w", encoding="utf-8") as f:
        for r in qrels(split): f.write(f"{qid[r[0]]}\t0\t{ids[r[1]]}\t1\n")
# NQ in DPR's layout
n = f"{work}/nq"; os.makedirs(n)
with open(f"{n}/psgs_w100.tsv", "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f, delimiter="\t", lineterminator="\n")
    w.writerow(["id", "text", "title"])
    for r in rows: w.writerow([ids[r[0]], r[2] + ' (the "package")', r[1]])
for split, name in (("train", "nq-train.json"), ("dev", "nq-dev.json")):
    pos = {}
    for r in qrels(split): pos.setdefault(r[0], []).append(r[1])
    out = [{"dataset": "nq", "question": q[1], "answers": [q[1].split()[0]],
            "positive_ctxs": [{"title": "t", "text": "x", "score": 1000, "title_score": 1, "passage_id": ids[p]} for p in pos.get(q[0], [])],
            "negative_ctxs": [], "hard_negative_ctxs": []} for q in queries(split)]
    json.dump(out, open(f"{n}/{name}", "w", encoding="utf-8"))
# nq-test.qa.csv: question<TAB>answers as a Python list literal (no passage labels)
with open(f"{n}/nq-test.qa.csv", "w", encoding="utf-8") as f:
    for q in queries("test"):
        words = q[1].split()
        f.write(f"{q[1]}\t{[words[0], words[-1] + chr(39) + 's']}\n")
PY

# ---- MS MARCO passage (docs/walkthrough.md, part 1) ----
m=$work/msmarco
ln -s collection.tsv "$m/corpus.tsv"
"$dgr" data check --data "$m" > "$work/m-check.log" || { cat "$work/m-check.log"; fail "MS MARCO: data check"; }
grep -q "queries.dev.small.tsv" "$work/m-check.log" || fail "data check skipped queries.dev.small.tsv"
"$dgr" index --data "$m" --vocab-size 500 --threads 1 > /dev/null
"$dgr" bm25 --data "$m" --split dev.small --split train --depth 1000 > "$work/m-bm25.log"
"$dgr" train --stage generate --data "$m" --out "$work/m-s1" --preset test --epochs 2 --batch 32 --threads 1 \
    --views body --eval-every 0 --eval-split dev.small --eval-max-queries 4 --eval-views body --beam 2 > /dev/null 2>&1 ||
  fail "MS MARCO: stage 1"
"$dgr" retrieve --data "$m" --model "$work/m-s1/model.h5" --split dev.small --views body --beam 4 --depth 1000 \
    --threads 1 --run "$work/m-run.trec" --tag my-run > /dev/null
[[ $(awk '{print $6}' "$work/m-run.trec" | sort -u) == my-run ]] || fail "MS MARCO: run tag"
"$dgr" evaluate --run "$work/m-run.trec" --qrels "$m/qrels.dev.small.tsv" --recall-at 10,100,1000 > "$work/m-eval.log"
grep -q "R@1000 " "$work/m-eval.log" || { cat "$work/m-eval.log"; fail "MS MARCO: no R@1000"; }
"$dgr" mine --data "$m" --model "$work/m-s1/model.h5" --split train --views body --beam 4 --depth 20 --threads 1 \
    --out "$work/m-mined" > /dev/null
# A teacher that ranked its own BM25 top 30 (pyserini style): passages beyond the mined candidates.
python3 - "$m/bm25.train.trec" "$work/m-teacher-own.trec" <<'PY'
import sys
out = open(sys.argv[2], "w")
for line in open(sys.argv[1]):
    qid, _, pid, rank, score, _ = line.split()
    if int(rank) <= 30: out.write(f"{qid} Q0 {pid} {rank} {100 - int(rank)} cross-encoder\n")
PY
if "$dgr" teacher import --mined "$work/m-mined" --run "$work/m-teacher-own.trec" --out "$work/m-teacher.trec" \
    --missing last > "$work/m-extra.log" 2>&1; then fail "teacher import accepted passages that were not mined without --extra ignore"; fi
"$dgr" teacher import --mined "$work/m-mined" --run "$work/m-teacher-own.trec" --out "$work/m-teacher.trec" \
    --missing last --extra ignore > "$work/m-teacher.log" 2>&1 || { cat "$work/m-teacher.log"; fail "teacher import --extra ignore"; }
"$dgr" prepare --mined "$work/m-mined" --teacher "$work/m-teacher.trec" --out "$work/m-prepared" --min-negatives 4 \
    --max-score-gap inf > "$work/m-prepare.log" 2>&1 || { cat "$work/m-prepare.log"; fail "MS MARCO: prepare"; }
echo "MS MARCO layout: check, index, bm25, stage 1, retrieve (depth 1000, R@1000), mine, teacher --extra ignore, prepare"

# ---- NQ in DPR's layout (docs/walkthrough.md, part 2) ----
n=$work/nq
ln -s psgs_w100.tsv "$n/corpus.tsv"
"$dgr" data dpr-queries --in "$n/nq-train.json" --data "$n" --split train > "$work/n-train.log"
"$dgr" data dpr-queries --in "$n/nq-dev.json" --data "$n" --split dev > /dev/null
grep -q "214 questions, 214 with a positive passage" "$work/n-train.log" || { cat "$work/n-train.log"; fail "NQ: dpr-queries counts"; }
python3 - "$n" "$tiny" <<'PY'
import sys, csv
n, tiny = sys.argv[1], sys.argv[2]
q = list(csv.reader(open(f"{n}/queries.train.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE))
t = list(csv.reader(open(f"{tiny}/queries.train.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE))
assert [r[1] for r in q[1:]] == [r[1] for r in t[1:]], "question texts differ"
assert q[1][0] == "train-0", q[1]
PY
"$dgr" data check --data "$n" > /dev/null
"$dgr" index --data "$n" --vocab-size 500 --threads 1 > /dev/null
"$dgr" train --stage generate --data "$n" --out "$work/n-s1" --preset test --epochs 2 --batch 32 --threads 1 \
    --views title,body --eval-every 0 --eval-split dev --eval-max-queries 4 --eval-views title --beam 2 > /dev/null 2>&1 ||
  fail "NQ: stage 1"
"$dgr" retrieve --data "$n" --model "$work/n-s1/model.h5" --split dev --views title,body --beam 4 --depth 100 \
    --threads 1 --out "$work/n-out" > /dev/null
[[ -s $work/n-out/run.dev.trec ]] || fail "NQ: no run"
# The csv-quoted text of psgs_w100.tsv is read as the text itself (candidates.tsv shows each passage's text).
"$dgr" mine --data "$n" --model "$work/n-s1/model.h5" --split train --views title,body --beam 4 --depth 10 --threads 1 \
    --max-queries 4 --out "$work/n-mined" > /dev/null
grep -q '(the "package")' "$work/n-mined/candidates.tsv" || fail "NQ: psgs_w100.tsv's quoted text was not unquoted"
! grep -q '""package""' "$work/n-mined/candidates.tsv" || fail "NQ: doubled quotes left in the text"
# NQ test: questions and answers only; evaluated by answer string (dgr evaluate --answers).
"$dgr" data dpr-queries --in "$n/nq-test.qa.csv" --data "$n" --split test > /dev/null
[[ -s $n/queries.test.tsv && -s $n/answers.test.jsonl && ! -e $n/qrels.test.tsv ]] || fail "NQ test: queries and answers only"
grep -q "'s\"" "$n/answers.test.jsonl" || { head -2 "$n/answers.test.jsonl"; fail "NQ test: a quoted answer was not read"; }
"$dgr" retrieve --data "$n" --model "$work/n-s1/model.h5" --split test --views title,body --beam 4 --depth 100 \
    --threads 1 --out "$work/n-out" > /dev/null
"$dgr" evaluate --run "$work/n-out/run.test.trec" --answers "$n/answers.test.jsonl" --corpus "$n/corpus.tsv" > "$work/n-acc.log"
grep -q "Acc@20 " "$work/n-acc.log" || { cat "$work/n-acc.log"; fail "NQ test: no answer accuracy"; }
# Malformed DPR files are refused naming the file.
echo '{"question": "x"}' > "$work/bad1.json"
printf '[{"question": "q", "positive_ctxs": [{"title": "t"}]}]' > "$work/bad2.json"
printf '[{"question": "q", "positive_ctxs": [{"passage_id": "nope"}]}]' > "$work/bad3.json"
for bad in bad1 bad2 bad3; do
  if "$dgr" data dpr-queries --in "$work/$bad.json" --data "$n" --split "$bad" > "$work/$bad.log" 2>&1; then
    fail "dpr-queries accepted $bad.json"
  fi
  grep -q "$bad.json" "$work/$bad.log" || { cat "$work/$bad.log"; fail "$bad.json: the error does not name the file"; }
  [[ ! -e $n/queries.$bad.tsv ]] || fail "$bad.json left a partial split"
done
echo "NQ (DPR) layout: psgs_w100.tsv, dpr-queries train/dev, check, index, stage 1, retrieve; malformed files refused"
echo "PASS"
