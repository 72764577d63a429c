#!/usr/bin/env bash
# The distillation data end to end on a small synthetic data set, the way a user runs it: `dgr index`, a
# 4-epoch stage 1 (test preset) for a model, `dgr mine` on 2 ranks over the training queries, `dgr teacher
# bm25`, `dgr prepare`, and the prepared set read back through DistillDataset (distill_dump_driver).
# Asserts: every training query is mined, in file order; labels are the qrels; docs are the index's; keys
# occur in the passage they are listed for; run.trec and candidates.tsv agree with candidates.jsonl; the
# teacher run covers exactly the candidates; the prepared set holds exactly the queries that pass the filter
# with the mined candidates, labels, keys and the teacher's scores and ranks; shard checksums match. Then
# stage 2 on it: 2-rank distillation, stopped by a signal and resumed, equals the uninterrupted run bit for
# bit, with the moving average of the weights (--ema-decay: checkpointed, resumed, exported); the distilled
# export retrieves; every loss kind runs.
# Usage: distill_pipeline_test.sh DGR DISTILL_DUMP MPIEXEC [MPIEXEC_FLAGS...]
set -euo pipefail
dgr=$1; dump=$2; shift 2
mpiexec=("$@")
work=$(mktemp -d /tmp/dgr_distill.XXXXXX)
trap 'rm -rf "$work"' EXIT
data=$work/data
mkdir -p "$data"
python3 "$(dirname "$0")/synthetic_data.py" "$data"
fail() { echo "FAIL: $*"; exit 1; }

"$dgr" index --data "$data" --out "$data/index" --vocab-size 200
# 4 epochs (6 s): after 2 the test-preset model's keys still weigh 0 and it retrieves nothing.
"$dgr" train --stage generate --data "$data" --out "$work/run" --preset test --epochs 4 --batch 16 --threads 1 \
    --views title,body --eval-every 0 --eval-split dev --eval-max-queries 2 --eval-views title --beam 2 \
    > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "stage 1"; }
[[ -f $work/run/model.h5 ]] || fail "no model"

# An existing directory that is not a mined one is never replaced (checked before any retrieval).
mkdir -p "$work/notmined" && touch "$work/notmined/keep"
set +e
"$dgr" mine --data "$data" --model "$work/run/model.h5" --out "$work/notmined" > "$work/notmined.log" 2>&1
rc=$?
set -e
[[ $rc -eq 2 && -f $work/notmined/keep ]] || { cat "$work/notmined.log"; fail "mine into a foreign directory: exit $rc"; }
grep -q "is not a mined directory" "$work/notmined.log" || fail "no message for a foreign --out"

mined=$work/mined
"${mpiexec[@]}" -n 2 "$dgr" mine --data "$data" --model "$work/run/model.h5" --split train --depth 20 --max-keys 6 \
    --views title,body --beam 3 --threads 1 --round-size 4 --out "$mined" | tee "$work/mine.log"
for f in candidates.jsonl candidates.tsv run.trec manifest.json; do [[ -s $mined/$f ]] || fail "no $f"; done
ls "$work" | grep -q "mined.tmp" && fail "temporary directory left behind"

"$dgr" teacher bm25 --mined "$mined" --data "$data" --out "$work/teacher.trec" | tee "$work/teacher.log"
"$dgr" prepare --mined "$mined" --teacher "$work/teacher.trec" --out "$work/prep" --shard-size 7 --min-negatives 3 \
    --max-score-gap 1e9 | tee "$work/prepare.log"
"$dump" "$work/prep" > "$work/prep.jsonl"

python3 - "$data" "$mined" "$work/teacher.trec" "$work/prep" "$work/prep.jsonl" <<'PY' || fail "output checks"
import hashlib, json, os, re, sys
data, mined, teacher_path, prep, dump = sys.argv[1:]
def tsv(path):
    return [l.rstrip("\n").split("\t") for l in open(path).read().splitlines()[1:]]
corpus = {pid: (title, text) for pid, title, text in tsv(os.path.join(data, "corpus.tsv"))}
queries = [(qid, text) for qid, text in tsv(os.path.join(data, "queries.train.tsv"))]
qrels = {(qid, pid) for qid, pid, grade in tsv(os.path.join(data, "qrels.train.tsv")) if int(grade) >= 1}
pids = open(os.path.join(data, "index", "pids.txt")).read().split("\n")
norm = lambda s: " ".join(s.lower().split())

# candidates.jsonl: every training query, in file order; labels, docs, ranks, scores, keys.
mined_q = [json.loads(l) for l in open(os.path.join(mined, "candidates.jsonl"))]
assert [q["qid"] for q in mined_q] == [qid for qid, _ in queries], "mined queries differ from queries.train.tsv"
n_cands = n_keys = with_pos = 0
for q, (qid, text) in zip(mined_q, queries):
    assert q["query"] == text and q["query_tokens"], q["qid"]
    cands = q["candidates"]
    assert 0 < len(cands) <= 20, (qid, len(cands))
    assert [c["rank"] for c in cands] == list(range(1, len(cands) + 1))
    assert all(cands[i]["score"] >= cands[i + 1]["score"] for i in range(len(cands) - 1)), qid
    assert len({c["pid"] for c in cands}) == len(cands), qid
    with_pos += any(c["positive"] for c in cands)
    for c in cands:
        assert c["positive"] == ((qid, c["pid"]) in qrels), (qid, c["pid"])
        assert pids[c["doc"]] == c["pid"], (c["doc"], c["pid"])
        assert 0 < len(c["keys"]) <= 6, (qid, c["pid"], len(c["keys"]))
        title, body = corpus[c["pid"]]
        for k in c["keys"]:
            assert k["view"] in ("title", "body") and k["count"] >= 1 and k["tokens"], k
            words = norm(k["text"].replace("<doc>", " ").replace("@@", " "))
            if k["view"] == "title":
                assert k["text"].startswith("<doc>"), k
                assert norm(title).startswith(words), (k, title)
            else:
                assert words in norm(title) or words in norm(body), (k, title, body)
            n_keys += 1
    n_cands += len(cands)
man = json.load(open(os.path.join(mined, "manifest.json")))
c = man["counts"]
assert (c["queries"], c["candidates"], c["keys"], c["queries_with_positive"]) == (len(queries), n_cands, n_keys, with_pos), c
assert abs(c["mean_candidates"] - n_cands / len(queries)) < 1e-9 and c["ranks"] == 2, c
index_manifest = json.load(open(os.path.join(data, "index", "index.json")))
for key in ("tokenizer_sha256", "fm_index_sha256", "pids_sha256"):
    assert man["index"][key] == index_manifest[key], key
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
for name, entry in man["files"].items():
    assert sha(os.path.join(mined, name)) == entry["sha256"], name

# run.trec and candidates.tsv agree with candidates.jsonl.
expected = [(q["qid"], c["pid"], c["rank"]) for q in mined_q for c in q["candidates"]]
run = [l.split() for l in open(os.path.join(mined, "run.trec"))]
assert [(r[0], r[2], int(r[3])) for r in run] == expected, "run.trec differs from candidates.jsonl"
rows = tsv(os.path.join(mined, "candidates.tsv"))
assert [(r[0], r[1], int(r[2])) for r in rows] == expected and all(len(r) == 6 for r in rows)
assert all(r[3] == dict(queries)[r[0]] and r[4] == corpus[r[1]][0] and r[5] == corpus[r[1]][1] for r in rows)

# The teacher run covers exactly the candidates, ranks 1..n.
teacher = {}
for l in open(teacher_path):
    qid, _, pid, rank, score, tag = l.split()
    assert tag == "bm25"
    teacher.setdefault(qid, {})[pid] = (int(rank), float(score))
for q in mined_q:
    t = teacher[q["qid"]]
    assert set(t) == {c["pid"] for c in q["candidates"]}, q["qid"]
    assert sorted(r for r, _ in t.values()) == list(range(1, len(t) + 1)), q["qid"]
assert set(teacher) == {q["qid"] for q in mined_q}

# The prepared set: the queries passing the filter, in mined order, with everything carried over.
pm = json.load(open(os.path.join(prep, "manifest.json")))
views = {"title": 0, "body": 1, "pq": 2}
def keep(q):
    pos = [c for c in q["candidates"] if c["positive"]]
    neg = [c for c in q["candidates"] if not c["positive"]]
    return len(pos) >= 1 and len(neg) >= 3 and pos[0]["score"] < neg[0]["score"] + 1e9
kept = [q for q in mined_q if keep(q)]
examples = [json.loads(l) for l in open(dump)]
assert [e["qid"] for e in examples] == [q["qid"] for q in kept], "prepared queries differ from the filter's"
assert pm["num_examples"] == len(kept) and pm["counts"]["kept"] == len(kept)
cn = pm["counts"]
assert cn["mined_queries"] == len(mined_q)
assert cn["kept"] + cn["dropped_no_positive"] + cn["dropped_few_negatives"] + cn["dropped_score_gap"] == len(mined_q), cn
assert cn["dropped_no_positive"] == sum(1 for q in mined_q if not any(c["positive"] for c in q["candidates"])), cn
assert pm["filter"] == {**pm["filter"], "min_positives": 1, "min_negatives": 3, "max_score_gap": 1e9}
assert pm["index"]["tokenizer_sha256"] == index_manifest["tokenizer_sha256"]
assert len(pm["shards"]) == (len(kept) + 6) // 7 and all(s["num_examples"] <= 7 for s in pm["shards"])
for s in pm["shards"]:
    assert sha(os.path.join(prep, s["file"])) == s["sha256"], s["file"]
for e, q in zip(examples, kept):
    assert e["query_tokens"] == q["query_tokens"]
    assert len(e["candidates"]) == len(q["candidates"])
    t = teacher[q["qid"]]
    for d, c in zip(e["candidates"], q["candidates"]):
        assert d["doc"] == c["doc"] and d["positive"] == c["positive"] and d["retriever_score"] == c["score"]
        assert d["teacher_rank"] == t[c["pid"]][0] and abs(d["teacher_score"] - t[c["pid"]][1]) < 1e-6, (d, t[c["pid"]])
        assert [k["tokens"] for k in d["keys"]] == [k["tokens"] for k in c["keys"]]
        assert [k["view"] for k in d["keys"]] == [views[k["view"]] for k in c["keys"]]
        assert [k["count"] for k in d["keys"]] == [k["count"] for k in c["keys"]]
print(f"checks: {len(mined_q)} mined queries, {n_cands} candidates, {n_keys} keys; {len(kept)} prepared in "
      f"{len(pm['shards'])} shards; dropped {cn['dropped_no_positive']} / {cn['dropped_few_negatives']} / "
      f"{cn['dropped_score_gap']}")
PY

# --add-run: the teacher's top passages (here `dgr bm25`'s top 5) join each list when the model's keys match
# them. The retrieved top 20 stay as they were (same docs, scores and order); every added passage is among
# the run's top 5, has a key and a score > 0; each list stays in score order.
"$dgr" bm25 --data "$data" --split train --out "$work/bm25.train.trec" > /dev/null
"${mpiexec[@]}" -n 2 "$dgr" mine --data "$data" --model "$work/run/model.h5" --split train --depth 20 --max-keys 6 \
    --views title,body --beam 3 --threads 1 --round-size 4 --out "$work/mined-added" \
    --add-run "$work/bm25.train.trec" --add-top 5 | tee "$work/mine-added.log"
python3 - "$mined" "$work/mined-added" "$work/bm25.train.trec" <<'PY' || fail "--add-run checks"
import json, os, sys
mined, added_dir, run = sys.argv[1:]
top = {}
for line in open(run):
    qid, _, pid, rank, _, _ = line.split()
    if int(rank) <= 5: top.setdefault(qid, set()).add(pid)
old = [json.loads(l) for l in open(os.path.join(mined, "candidates.jsonl"))]
new = [json.loads(l) for l in open(os.path.join(added_dir, "candidates.jsonl"))]
assert [q["qid"] for q in old] == [q["qid"] for q in new]
n_added = 0
for o, n in zip(old, new):
    before = [(c["pid"], c["score"]) for c in o["candidates"]]
    kept = [(c["pid"], c["score"]) for c in n["candidates"] if c["pid"] in dict(before)]
    assert kept == before, (o["qid"], before, kept)
    scores = [c["score"] for c in n["candidates"]]
    assert scores == sorted(scores, reverse=True), o["qid"]
    for c in n["candidates"]:
        if c["pid"] in dict(before): continue
        n_added += 1
        assert c["pid"] in top.get(o["qid"], set()), (o["qid"], c["pid"])
        assert c["score"] > 0 and c["keys"], (o["qid"], c["pid"])
assert n_added > 0, "no passage added"
manifest = json.load(open(os.path.join(added_dir, "manifest.json")))
assert manifest["retrieval"]["added"]["top"] == 5, manifest["retrieval"]
print(f"--add-run: {n_added} passages added to {len(new)} lists")
PY

# The filter's defaults on this small set (depth 20): whatever is kept, the counts add up; when nothing
# passes, the error says which rules dropped the queries.
set +e
"$dgr" prepare --mined "$mined" --teacher "$work/teacher.trec" --out "$work/prep2" > "$work/prepare2.log" 2>&1
rc=$?
set -e
cat "$work/prepare2.log"
if [[ $rc -ne 0 ]]; then
  grep -q "no query passed the filter" "$work/prepare2.log" || fail "prepare with defaults failed without the filter message"
  [[ ! -e $work/prep2 ]] || fail "a failed prepare left its output"
fi
# A teacher run over other candidates is rejected by prepare as by teacher import.
head -n -1 "$work/teacher.trec" > "$work/short.trec"
set +e
"$dgr" prepare --mined "$mined" --teacher "$work/short.trec" --out "$work/prep3" > "$work/prepare3.log" 2>&1
rc=$?
set -e
[[ $rc -eq 1 ]] && grep -q "are not in the run" "$work/prepare3.log" && [[ ! -e $work/prep3 ]] \
  || { cat "$work/prepare3.log"; fail "prepare with an incomplete teacher run"; }
# Stage 2 on the prepared set (`dgr train --stage distill`, DGR loss, 2 ranks): a run stopped by a signal
# (DGR_TEST_STOP_AT_STEP: rank 1 raises SIGUSR1 after step 3) exits 3 with a committed checkpoint, and
# running the same command again resumes there and ends with exactly the weights of an uninterrupted run.
distill=("${mpiexec[@]}" -n 2 "$dgr" train --stage distill --data "$data" --prepared "$work/prep" --init-model "$work/run/model.h5"
         --epochs 2 --batch 4 --threads 1 --eval-every 0 --eval-max-queries 2 --beam 2 --views title)
"${distill[@]}" --loss dgr --out "$work/d_full" > "$work/d_full.log" 2>&1 || { cat "$work/d_full.log"; fail "stage 2"; }
grep -q "stage 2 done" "$work/d_full.log" || { cat "$work/d_full.log"; fail "stage 2 did not finish"; }
grep -q '"rank_loss"' "$work/d_full/train.jsonl" || fail "no stage-2 train events in train.jsonl"
set +e
DGR_TEST_STOP_AT_STEP=3 "${distill[@]}" --loss dgr --out "$work/d_part" > "$work/d_part1.log" 2>&1
rc=$?
set -e
[[ $rc -eq 3 ]] || { cat "$work/d_part1.log"; fail "a signal stop of stage 2 should exit 3, got $rc"; }
[[ -f $work/d_part/checkpoints/step-00000003/COMMITTED ]] || fail "no committed stage-2 checkpoint at the stop step"
"${distill[@]}" --loss dgr --out "$work/d_part" > "$work/d_part2.log" 2>&1 || { cat "$work/d_part2.log"; fail "resumed stage 2"; }
grep -q "resumed from .*step-00000003 (step 3" "$work/d_part2.log" || { cat "$work/d_part2.log"; fail "stage 2 did not resume from step 3"; }
h5diff "$work/d_full/model.h5" "$work/d_part/model.h5" /weights /weights > "$work/h5diff.txt" 2>&1 \
  || { head -20 "$work/h5diff.txt"; fail "stopped + resumed stage 2 differs from the uninterrupted run"; }
# The moving average of the weights in stage 2 (--ema-decay): the export holds the average, so the average
# is what must resume exactly; it is in every checkpoint and in the config; a checkpoint's export is the
# average, as the run's own export is; and it differs from the last weights (the run without it above).
"${distill[@]}" --loss dgr --ema-decay 0.9 --out "$work/e_full" > "$work/e_full.log" 2>&1 || { cat "$work/e_full.log"; fail "stage 2 with --ema-decay"; }
set +e
DGR_TEST_STOP_AT_STEP=3 "${distill[@]}" --loss dgr --ema-decay 0.9 --out "$work/e_part" > "$work/e_part1.log" 2>&1
rc=$?
set -e
[[ $rc -eq 3 ]] || { cat "$work/e_part1.log"; fail "a signal stop of stage 2 with --ema-decay should exit 3, got $rc"; }
"${distill[@]}" --loss dgr --ema-decay 0.9 --out "$work/e_part" > "$work/e_part2.log" 2>&1 || { cat "$work/e_part2.log"; fail "resumed stage 2 with --ema-decay"; }
grep -q "resumed from .*step-00000003 (step 3" "$work/e_part2.log" || { cat "$work/e_part2.log"; fail "stage 2 with --ema-decay did not resume from step 3"; }
h5diff "$work/e_full/model.h5" "$work/e_part/model.h5" /weights /weights > "$work/h5diff_ema.txt" 2>&1 \
  || { head -20 "$work/h5diff_ema.txt"; fail "stopped + resumed stage 2 with --ema-decay differs from the uninterrupted run"; }
last_step=$(ls -d "$work/e_part/checkpoints"/step-* | tail -n 1)
n_ema=$(h5ls -r "$last_step/model.h5" | grep -c '^/ema/' || true)
[[ $n_ema -gt 0 ]] || fail "no ema/ arrays in the stage-2 checkpoint $last_step"
grep -Eq '"ema_decay": ?0.9' "$work/e_full/config.json" || fail "stage 2's config.json does not record ema_decay"
"$dgr" export --checkpoints "$work/e_full/checkpoints" --out "$work/e_export.h5" > /dev/null
h5diff "$work/e_full/model.h5" "$work/e_export.h5" /weights /weights > /dev/null \
  || fail "the stage-2 checkpoint's export differs from the run's export (the average)"
if h5diff -q "$work/e_full/model.h5" "$work/d_full/model.h5" /weights /weights > /dev/null 2>&1; then
  fail "--ema-decay did not change stage 2's export"
fi
# The distilled export retrieves like the stage-1 one (title and body: complete title keys of this short
# stage 1 alone still weigh 0 for some queries).
"${mpiexec[@]}" -n 2 "$dgr" retrieve --data "$data" --model "$work/d_full/model.h5" --split dev --out "$work/d_full" \
  --views title,body --beam 2 --threads 1 > "$work/d_retrieve.log" 2>&1 || { cat "$work/d_retrieve.log"; fail "retrieve with the distilled model"; }
[[ $(cut -d' ' -f1 "$work/d_full/run.dev.trec" | sort -u | wc -l) -eq 6 ]] || fail "the distilled model's run misses dev queries"
# Every other loss runs a step in the same loop; a bad one is a config error.
for loss in ltrgr listnet listmle lambdaloss kl generation; do
  "${distill[@]}" --loss "$loss" --max-steps 2 --out "$work/d_$loss" > "$work/d_$loss.log" 2>&1 \
    || { cat "$work/d_$loss.log"; fail "stage 2 with --loss $loss"; }
done
set +e
"$dgr" train --stage distill --data "$data" --prepared "$work/prep" --init-model "$work/run/model.h5" --loss nope \
  --out "$work/d_bad" > "$work/d_bad.log" 2>&1
rc=$?
set -e
[[ $rc -eq 2 ]] && grep -q "loss" "$work/d_bad.log" || { cat "$work/d_bad.log"; fail "an unknown loss should be a config error (2), got $rc"; }
echo "ok"
