#!/usr/bin/env bash
# The generative retriever end to end on a small synthetic data set, the way a user runs it:
# `dgr index`, `dgr train --stage generate` on 2 ranks (test preset), a stop signal and a resume from the
# committed checkpoint, `dgr export` of a checkpoint step, `dgr retrieve` on 2 ranks, `dgr evaluate`.
# With --ema-decay: the stopped and resumed run ends with the same export as an uninterrupted one.
# Asserts what users rely on: the run has every query, ranks 1..k, pids of the corpus; the keys file has
# keys that occur in the passage they are listed for; a checkpoint export equals the trained export's
# weights; the stopped run exits 3 and the resumed one finishes from the saved step.
# Usage: stage1_pipeline_test.sh DGR MPIEXEC [MPIEXEC_FLAGS...]
set -euo pipefail
dgr=$1; shift
mpiexec=("$@")
work=$(mktemp -d /tmp/dgr_stage1.XXXXXX)
trap 'rm -rf "$work"' EXIT
data=$work/data
mkdir -p "$data"
python3 "$(dirname "$0")/synthetic_data.py" "$data"
fail() { echo "FAIL: $*"; exit 1; }

"$dgr" index --data "$data" --out "$data/index" --vocab-size 200 | tee "$work/index.log"
[[ -f $data/index/index.json && -f $data/index/fm_index.bin && -f $data/index/tokenizer.model ]] || fail "index files missing"

train=("${mpiexec[@]}" -n 2 "$dgr" train --stage generate --data "$data" --out "$work/run" --preset test
       --epochs 4 --batch 16 --save-every 5 --eval-every 2 --eval-split dev --threads 1 --views title,body
       --eval-views title,body --beam 4 --ema-decay 0.9)
# First part: a stop signal after a few steps (DGR_TEST_STOP_AT_STEP raises SIGUSR1 on rank 1).
set +e
DGR_TEST_STOP_AT_STEP=7 "${train[@]}" > "$work/train1.log" 2>&1
rc=$?
set -e
cat "$work/train1.log"
[[ $rc -eq 3 ]] || fail "a signal stop should exit 3, got $rc"
grep -q "stopped by a signal at step 7" "$work/train1.log" || fail "no stop message at step 7"
[[ -f $work/run/checkpoints/step-00000007/COMMITTED ]] || fail "no committed checkpoint at the stop step"
# A resume that would continue another run (another global batch) is refused, naming the difference; the
# checkpoint is left as it was.
changed=("${train[@]}")
for i in "${!changed[@]}"; do [[ ${changed[$i]} == --batch ]] && changed[$((i + 1))]=8; done
if "${changed[@]}" > "$work/changed.log" 2>&1; then fail "a resume with another --batch was accepted"; fi
grep -q "global_batch: 16 -> 8" "$work/changed.log" || { cat "$work/changed.log"; fail "the refusal does not name the batch"; }
# --accept-changes continues it anyway (on a copy), logging the change.
cp -r "$work/run" "$work/accepted"
accepted=("${changed[@]}")
for i in "${!accepted[@]}"; do [[ ${accepted[$i]} == --out ]] && accepted[$((i + 1))]=$work/accepted; done
"${accepted[@]}" --accept-changes --max-steps 8 > "$work/accepted.log" 2>&1 || { cat "$work/accepted.log"; fail "--accept-changes"; }
grep -q "resumed from .*step-00000007 (step 7" "$work/accepted.log" || fail "--accept-changes did not resume"
grep -q "(--accept-changes) train/global_batch: 16 -> 8" "$work/accepted.log" || fail "--accept-changes did not log the change"
rm -rf "$work/accepted"
"${train[@]}" > "$work/train2.log" 2>&1 || { cat "$work/train2.log"; fail "resumed training failed"; }
cat "$work/train2.log"
grep -q "resumed from .*step-00000007 (step 7" "$work/train2.log" || fail "did not resume from step 7"
# train.jsonl: each run starts with a "start" event (the refused resume wrote none); every event has a time.
[[ $(grep '"event":"start"' "$work/run/train.jsonl" | grep -c '"resumed":false') -eq 1 &&
   $(grep '"event":"start"' "$work/run/train.jsonl" | grep -c '"resumed":true,"stage":"stage 1","step":7') -eq 1 ]] ||
  { grep '"event":"start"' "$work/run/train.jsonl"; fail "train.jsonl: not one start event per run"; }
! grep -v '"event":"start"' "$work/run/train.jsonl" | grep -qv '"time":"20' || fail "train.jsonl: an event without a time"
grep -q '"event":"eval"' "$work/run/train.jsonl" || fail "no evaluation in train.jsonl"
[[ -f $work/run/model.h5 ]] || fail "no model export"
grep -q '"ema_decay":0.9' "$work/run/config.json" || grep -q '"ema_decay": 0.9' "$work/run/config.json" ||
  fail "config.json does not record ema_decay"
# The same run without the stop: the average of the weights (what the export holds) resumed exactly.
straight=("${train[@]}")
for i in "${!straight[@]}"; do [[ ${straight[$i]} == "$work/run" ]] && straight[$i]=$work/straight; done
"${straight[@]}" > "$work/straight.log" 2>&1 || { cat "$work/straight.log"; fail "uninterrupted training failed"; }
h5diff "$work/run/model.h5" "$work/straight/model.h5" /weights /weights ||
  fail "the stopped and resumed run's export differs from the uninterrupted run's"
last_step=$(ls -d "$work/run/checkpoints"/step-* | tail -n 1)
n_ema=$(h5ls -r "$last_step/model.h5" | grep -c '^/ema/' || true)
[[ $n_ema -gt 0 ]] || fail "no ema/ arrays in $last_step"
echo "resume check: the export (weight average) equals an uninterrupted run's (h5diff)"

# A checkpoint export of the last step has the same weights as the export written at the end.
"$dgr" export --checkpoints "$work/run/checkpoints" --out "$work/export.h5"
h5diff "$work/run/model.h5" "$work/export.h5" /weights /weights || fail "checkpoint export differs from the trained export"
n=$(h5ls -r "$work/export.h5/weights" | grep -c Dataset)
[[ $n -gt 0 ]] || fail "no weights in the export"
echo "export check: $n weight arrays equal (h5diff)"

"${mpiexec[@]}" -n 2 "$dgr" retrieve --data "$data" --model "$work/run/model.h5" --split dev --split test \
    --views title,body --beam 4 --depth 10 --threads 1 --out "$work/out" | tee "$work/retrieve.log"
for split in dev test; do
  run=$work/out/run.$split.trec
  [[ -s $run ]] || fail "empty run $run"
  expected=$(($(wc -l < "$data/queries.$split.tsv") - 1))
  got=$(cut -d' ' -f1 "$run" | sort -u | wc -l)
  [[ $got -eq $expected ]] || fail "$run has $got queries, expected $expected"
  "$dgr" evaluate --run "$run" --qrels "$data/qrels.$split.tsv" --corpus "$data/corpus.tsv"
done
# --run FILE --tag NAME: the same run, in that file, with that tag; --run with two splits is refused.
"$dgr" retrieve --data "$data" --model "$work/run/model.h5" --split dev --views title,body --beam 4 --depth 10 \
    --threads 1 --run "$work/named/dev-run.trec" --tag my-tag > /dev/null
[[ "$(sed 's/ my-tag$/ dgr/' "$work/named/dev-run.trec")" == "$(cat "$work/out/run.dev.trec")" ]] ||
  fail "--run/--tag: not the same run with the new tag"
[[ -s $work/named/dev-run.json ]] || fail "--run: no settings file beside the run"
if "$dgr" retrieve --data "$data" --model "$work/run/model.h5" --split dev --split test --run "$work/x.trec" \
    > "$work/two.log" 2>&1; then fail "--run with two splits was accepted"; fi
grep -q "give one --split" "$work/two.log" || fail "--run with two splits: $(cat "$work/two.log")"
# A model meets only its own index: `dgr index` does not replace one without --force; an index of another
# corpus with the same tokenizer is refused by retrieve (and accepted with --any-index); another tokenizer too.
if "$dgr" index --data "$data" --out "$data/index" --vocab-size 200 > "$work/reindex.log" 2>&1; then
  fail "dgr index replaced an existing index without --force"
fi
grep -q "pass --force" "$work/reindex.log" || { cat "$work/reindex.log"; fail "dgr index: no clear refusal"; }
mkdir -p "$work/other-data"
cp "$data"/queries.* "$data"/qrels.* "$work/other-data/"
head -n -1 "$data/corpus.tsv" > "$work/other-data/corpus.tsv"  # one passage fewer
grep -v "$(tail -n 1 "$data/corpus.tsv" | cut -f1)" "$data/qrels.dev.tsv" > "$work/other-data/qrels.dev.tsv" || true
"$dgr" index --data "$work/other-data" --out "$work/other-index" --tokenizer-model "$data/index/tokenizer.model" > /dev/null
if "$dgr" retrieve --data "$data" --index "$work/other-index" --model "$work/run/model.h5" --split dev --views title \
    --out "$work/wrong-index" > "$work/wrong-index.log" 2>&1; then fail "retrieve accepted another FM-index"; fi
grep -q "trained on another FM-index" "$work/wrong-index.log" || { cat "$work/wrong-index.log"; fail "no FM-index refusal"; }
[[ ! -e $work/wrong-index/run.dev.trec ]] || fail "a refused retrieve left a run"
"$dgr" retrieve --data "$data" --index "$work/other-index" --model "$work/run/model.h5" --split dev --views title \
    --beam 2 --depth 5 --threads 1 --out "$work/any-index" --any-index > /dev/null || fail "--any-index"
"$dgr" index --data "$data" --out "$work/other-tokenizer" --vocab-size 200 --model-type bpe > /dev/null
if "$dgr" retrieve --data "$data" --index "$work/other-tokenizer" --model "$work/run/model.h5" --split dev \
    --views title --out "$work/wrong-tok" --any-index > "$work/wrong-tok.log" 2>&1; then fail "retrieve accepted another tokenizer"; fi
grep -q "another tokenizer" "$work/wrong-tok.log" || { cat "$work/wrong-tok.log"; fail "no tokenizer refusal"; }
echo "index check: no silent index rebuild; another FM-index or tokenizer is refused"
# --device cpu is what the default (auto) picks on a machine without a GPU: the same weights, losses and runs.
if ! nvidia-smi -L >/dev/null 2>&1; then
  short=("$dgr" train --stage generate --data "$data" --preset test --max-steps 3 --batch 16 --threads 1
         --views title --eval-every 0 --eval-split dev --eval-max-queries 3 --eval-views title --beam 2
         --progress-every-s 0)
  "${short[@]}" --out "$work/default" > "$work/default.log" 2>&1 || { cat "$work/default.log"; fail "short default run"; }
  "${short[@]}" --out "$work/cpu" --device cpu > "$work/cpu.log" 2>&1 || { cat "$work/cpu.log"; fail "short --device cpu run"; }
  # --no-resume into an OUT that holds a run: the old checkpoints and train.jsonl are moved aside, so the new
  # run's steps are the only ones a resume or `dgr export` can find, and its log starts empty.
  cp -r "$work/default" "$work/again"
  again=("${short[@]}")
  again[${#again[@]}]=--out; again[${#again[@]}]=$work/again
  for i in "${!again[@]}"; do [[ ${again[$i]} == --max-steps ]] && again[$((i + 1))]=2; done
  "${again[@]}" --no-resume > "$work/again.log" 2>&1 ||
    { cat "$work/again.log"; fail "--no-resume run"; }
  [[ $(ls "$work/again/checkpoints") == "step-00000002" ]] || fail "--no-resume left other steps: $(ls "$work/again/checkpoints")"
  compgen -G "$work/again/checkpoints.replaced-*/step-00000003/COMMITTED" > /dev/null || fail "the old checkpoints were not kept aside"
  compgen -G "$work/again/train.jsonl.replaced-*" > /dev/null || fail "the old train.jsonl was not kept aside"
  [[ $(grep -c '"event":"train"' "$work/again/train.jsonl") -le 2 ]] || fail "the new train.jsonl continues the old one"
  grep -q "no-resume: the previous run's" "$work/again.log" || fail "--no-resume did not say where the old run went"
  # --resume never refuses an OUT holding a run (exit 2) and, with --force, moves it aside.
  if "${again[@]}" --resume never > "$work/never.log" 2>&1; then fail "--resume never continued or replaced a run"; fi
  grep -q "already holds a run" "$work/never.log" || { cat "$work/never.log"; fail "--resume never: no clear refusal"; }
  "${again[@]}" --resume never --force > "$work/never-force.log" 2>&1 || { cat "$work/never-force.log"; fail "--resume never --force"; }
  [[ $(ls -d "$work"/again/checkpoints.replaced-* | wc -l) -ge 2 ]] || fail "--resume never --force did not move the run aside"
  # --resume PATH: from step 1 of a run that went on to step 3; the later steps are moved aside and the run
  # ends with the weights of the uninterrupted one; another run's step starts a new OUT, but not an occupied one.
  "${short[@]}" --out "$work/steps" --save-every 1 --keep-last 0 > "$work/steps.log" 2>&1 || fail "--save-every 1 run"
  cp "$work/steps/model.h5" "$work/steps-uninterrupted.h5"
  "${short[@]}" --out "$work/steps" --save-every 1 --keep-last 0 --resume "$work/steps/checkpoints/step-00000001" \
      > "$work/from1.log" 2>&1 || { cat "$work/from1.log"; fail "--resume PATH"; }
  grep -q "resumed from .*step-00000001 (step 1" "$work/from1.log" || fail "--resume PATH did not resume from step 1"
  compgen -G "$work/steps/checkpoints.replaced-*/step-00000003/COMMITTED" > /dev/null || fail "--resume PATH kept later steps"
  h5diff "$work/steps-uninterrupted.h5" "$work/steps/model.h5" /weights /weights || fail "--resume PATH: other weights"
  "${short[@]}" --out "$work/warm" --resume "$work/steps/checkpoints/step-00000002" > "$work/warm.log" 2>&1 ||
    { cat "$work/warm.log"; fail "--resume from another run's step"; }
  if "${short[@]}" --out "$work/cpu" --resume "$work/steps/checkpoints/step-00000002" > "$work/occupied.log" 2>&1; then
    fail "--resume PATH into an OUT holding another run was accepted"
  fi
  grep -q "already holds another run" "$work/occupied.log" || { cat "$work/occupied.log"; fail "--resume PATH: no refusal"; }
  echo "resume modes: never refuses (and --force moves aside), PATH resumes that step, later steps set aside"
  # The run directory's records: one attempt file per start, the resolved options re-feedable to --config.
  python3 - "$work/steps" <<'PY' || fail "attempt records"
import json, sys
out = sys.argv[1]
a1, a2 = (json.load(open(f"{out}/attempts/attempt-{n}.json")) for n in (1, 2))
assert a1["attempt"] == 1 and not a1["resumed"] and a2["attempt"] == 2 and a2["resumed"] and a2["start_step"] == 1, (a1, a2)
for a in (a1, a2):
    assert " train " in a["command_line"] and "(git " in a["versions"] and a["world_size"] == 1 and a["time"].endswith("Z"), a
events = [json.loads(l) for l in open(f"{out}/train.jsonl")]
starts = [e for e in events if e["event"] == "start"]
assert [e["attempt"] for e in starts] == [1, 2], starts
assert all("attempt" in e and "time" in e for e in events), "a train.jsonl line without attempt or time"
assert events[-1]["attempt"] == 2, events[-1]
PY
  "$dgr" --config "$work/default/attempts/attempt-1.toml" train --out "$work/refed" > "$work/refed.log" 2>&1 ||
    { cat "$work/refed.log"; fail "--config OUT/attempts/attempt-1.toml"; }
  h5diff "$work/default/model.h5" "$work/refed/model.h5" /weights /weights || fail "the re-fed attempt config trains another model"
  echo "run directory: attempt records per start, train.jsonl lines numbered, attempt-1.toml re-runs the run"
  # --keep-best: OUT/model.best.h5 is the evaluated step with the highest dev R@10 (the first such), which
  # best.json names; its weights are that step's checkpoint's.
  "$dgr" train --stage generate --data "$data" --out "$work/best" --preset test --epochs 6 --batch 16 --threads 1 \
      --views title,body --eval-every 1 --eval-split dev --eval-views title,body --beam 2 --keep-last 0 \
      --keep-best dev:R@10 --progress-every-s 0 > "$work/best.log" 2>&1 || { cat "$work/best.log"; fail "--keep-best run"; }
  best_step=$(python3 - "$work/best" <<'PY'
import json, sys
out = sys.argv[1]
evals = [json.loads(l) for l in open(f"{out}/train.jsonl") if '"eval"' in l]
evals = [e for e in evals if e["split"] == "dev"]
top = max(e["metrics"]["R@10"] for e in evals)
first = next(e for e in evals if e["metrics"]["R@10"] == top)
best = json.load(open(f"{out}/best.json"))
assert best["split"] == "dev" and best["metric"] == "R@10" and best["value"] == top and best["step"] == first["step"], (best, top, first["step"])
print(best["step"])
PY
) || fail "best.json does not name the best evaluation"
  "$dgr" export --checkpoints "$work/best/checkpoints" --step "$best_step" --out "$work/best-step.h5" > /dev/null
  h5diff "$work/best-step.h5" "$work/best/model.best.h5" /weights /weights || fail "model.best.h5 is not step $best_step's model"
  if "$dgr" train --stage generate --data "$data" --out "$work/best-bad" --preset test --max-steps 1 --threads 1 \
      --keep-best dev:R@7 > "$work/best-bad.log" 2>&1; then fail "--keep-best with an unknown metric was accepted"; fi
  grep -q "unknown metric 'R@7'" "$work/best-bad.log" || { cat "$work/best-bad.log"; fail "--keep-best: no clear error"; }
  echo "keep-best: model.best.h5 = the step with the best dev R@10 (step $best_step)"
  grep -q 'start: .* device=cpu ' "$work/default.log" || fail "the start-up line does not name device=cpu"
  h5diff "$work/default/model.h5" "$work/cpu/model.h5" /weights /weights || fail "--device cpu weights differ from the default's"
  strip() { sed -E 's/"(elapsed_s|examples_per_s|queries_per_s|time)":[^,}]*//g' "$1"; }
  [[ "$(strip "$work/default/train.jsonl")" == "$(strip "$work/cpu/train.jsonl")" ]] ||
    fail "--device cpu losses or metrics differ from the default's"
  "$dgr" retrieve --data "$data" --model "$work/run/model.h5" --split dev --views title,body --beam 4 --depth 10 \
      --threads 1 --out "$work/out-cpu" --device cpu > /dev/null
  "$dgr" retrieve --data "$data" --model "$work/run/model.h5" --split dev --views title,body --beam 4 --depth 10 \
      --threads 1 --out "$work/out-default" > /dev/null
  cmp "$work/out-cpu/run.dev.trec" "$work/out-default/run.dev.trec" || fail "retrieve --device cpu differs from the default"
  cmp "$work/out-cpu/keys.dev.jsonl" "$work/out-default/keys.dev.jsonl" || fail "retrieve --device cpu keys differ"
  echo "device check: --device cpu = the default (weights, losses, runs)"
fi
python3 - "$data/corpus.tsv" "$work/out/keys.dev.jsonl" <<'PY' || fail "keys file"
import sys, json
corpus = {}
for line in open(sys.argv[1]).read().splitlines()[1:]:
    pid, title, text = line.split("\t")
    corpus[pid] = (title + " " + text).lower()
n = 0
for line in open(sys.argv[2]):
    entry = json.loads(line)
    assert entry["pid"] in corpus, entry["pid"]
    assert entry["keys"], f"no keys for {entry['qid']} {entry['pid']}"
    for k in entry["keys"]:
        assert k["count"] >= 1 and k["view"] in ("title", "body", "pq"), k
    n += 1
assert n > 0
print(f"keys check: {n} (query, passage) lines")
PY
echo "ok"
