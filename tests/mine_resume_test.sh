#!/usr/bin/env bash
# `dgr mine` survives preemption (Note [Resumable mining] in data/mined_writer.h): a mining stopped by a signal
# (exit 3, as `dgr train`), then one killed with SIGKILL partway, each continued by running the same command
# (on another number of ranks), gives candidates.jsonl, candidates.tsv and run.trec byte-identical to an
# uninterrupted mining. Also: OUT never appears before the end; OUT.partial of another run (another depth) is
# refused naming what differs, and --force starts over; OUT.partial is gone once OUT is complete. Then `dgr
# retrieve` the same way (Note [Resumable retrieval]): stopped after 3 rounds (exit 3, RUN.partial journal), then
# killed, then finished on 2 ranks: run and keys files byte-identical to an uninterrupted retrieval.
# Usage: mine_resume_test.sh DGR DATA_DIR MPIEXEC [MPIEXEC_FLAGS...]   (DATA_DIR: datasets/debian-tiny)
set -euo pipefail
dgr=$1; data=$2; shift 2
mpiexec=("$@")
work=$(mktemp -d /tmp/dgr_mine_resume.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$dgr" index --data "$data" --out "$work/index" --vocab-size 500 --threads 1 > /dev/null
"$dgr" train --stage generate --data "$data" --index "$work/index" --out "$work/run" --preset test --epochs 2 \
    --batch 32 --threads 1 --views title,body --eval-every 0 --eval-split dev --eval-max-queries 2 --eval-views title \
    --beam 2 > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "stage 1"; }
total=$(($(wc -l < "$data/queries.train.tsv") - 1))
base=(mine --data "$data" --index "$work/index" --model "$work/run/model.h5" --split train --max-keys 6
      --views title,body --beam 8 --round-size 2 --threads 1)
mine=("${base[@]}" --depth 20)

"${mpiexec[@]}" -n 2 "$dgr" "${mine[@]}" --out "$work/full" > "$work/full.log" 2>&1 || { cat "$work/full.log"; fail "mining"; }
[[ ! -e $work/full.partial ]] || fail "OUT.partial left after a complete mining"

# 1. A stop signal after the 3rd round (DGR_TEST_STOP_AT_STEP: rank 1 sends itself SIGUSR1, as requeue.sh would).
set +e
DGR_TEST_STOP_AT_STEP=3 "${mpiexec[@]}" -n 2 "$dgr" "${mine[@]}" --out "$work/part" > "$work/stop.log" 2>&1
rc=$?
set -e
[[ $rc -eq 3 ]] || { cat "$work/stop.log"; fail "a stopped mining exits $rc, not 3"; }
[[ ! -e $work/part ]] || fail "OUT exists after a stopped mining"
done1=$(python3 -c "import json; print(json.load(open('$work/part.partial/resume.json'))['queries'])")
[[ $done1 -eq 12 ]] || fail "after 3 rounds of 2 ranks x 2 queries, $done1 queries are recorded (expected 12)"

# 2. Another run in that directory is refused, naming what differs.
set +e
"$dgr" "${base[@]}" --depth 10 --out "$work/part" > "$work/other.log" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] || fail "a mining with another depth continued OUT.partial"
grep -q "retrieval" "$work/other.log" || { cat "$work/other.log"; fail "the refusal does not name the setting"; }

# 3. Continued on 1 rank and killed with SIGKILL partway (no chance to clean up), then finished on 2 ranks.
"$dgr" "${mine[@]}" --out "$work/part" > "$work/killed.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  n=$(python3 -c "import json; print(json.load(open('$work/part.partial/resume.json'))['queries'])" 2>/dev/null || echo 0)
  ((n >= done1 + 10)) && break
  sleep 0.05
done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
[[ ! -e $work/part ]] || fail "the killed mining finished before the kill (make it slower)"
grep -q "continuing .* $done1 of $total queries" "$work/killed.log" || { cat "$work/killed.log"; fail "no resume message"; }
"${mpiexec[@]}" -n 2 "$dgr" "${mine[@]}" --out "$work/part" > "$work/resumed.log" 2>&1 || { cat "$work/resumed.log"; fail "resume"; }
grep -q "continuing" "$work/resumed.log" || fail "the last run did not continue OUT.partial"
for f in candidates.jsonl candidates.tsv run.trec; do
  cmp "$work/full/$f" "$work/part/$f" || fail "$f differs from the uninterrupted mining"
done
[[ ! -e $work/part.partial ]] || fail "OUT.partial left after the resumed mining completed"
python3 - "$work/full/manifest.json" "$work/part/manifest.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for m in (a, b):
    for k in ("seconds", "queries_per_second", "ranks"):
        m["counts"].pop(k)
assert a == b, "manifests differ beyond timing"
PY

# 4. --force starts over (OUT.partial of a stopped run is removed, the mining runs from query 0).
set +e
DGR_TEST_STOP_AT_STEP=1 "$dgr" "${mine[@]}" --out "$work/again" > /dev/null 2>&1
set -e
"$dgr" "${base[@]}" --depth 10 --force --out "$work/again" > "$work/force.log" 2>&1 || { cat "$work/force.log"; fail "--force"; }
! grep -q "continuing" "$work/force.log" || fail "--force continued OUT.partial"

# ---- dgr retrieve: stopped, killed, continued ----
retrieve=(retrieve --data "$data" --index "$work/index" --model "$work/run/model.h5" --split dev --split test
          --views title,body --beam 8 --round-size 1 --threads 1)
"$dgr" "${retrieve[@]}" --out "$work/r-full" > /dev/null 2>&1 || fail "uninterrupted retrieval"
set +e
DGR_TEST_STOP_AT_STEP=3 "${mpiexec[@]}" -n 2 "$dgr" "${retrieve[@]}" --out "$work/r-part" > "$work/r-stop.log" 2>&1
rc=$?
set -e
[[ $rc -eq 3 ]] || { cat "$work/r-stop.log"; fail "a stopped retrieval exits $rc, not 3"; }
[[ ! -e $work/r-part/run.dev.trec && -s $work/r-part/run.dev.trec.partial ]] || fail "after a stop: a run file, or no journal"
grep -q "records\": 6" "$work/r-part/run.dev.trec.partial.resume.json" || { cat "$work/r-part/run.dev.trec.partial.resume.json"; fail "3 rounds of 2 ranks x 1 query are not 6 records"; }
"$dgr" "${retrieve[@]}" --out "$work/r-part" > "$work/r-killed.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  n=$(python3 -c "import json; print(json.load(open('$work/r-part/run.dev.trec.partial.resume.json'))['records'])" 2>/dev/null || echo 0)
  ((n >= 12)) && break
  sleep 0.05
done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
[[ ! -e $work/r-part/run.dev.trec ]] || fail "the killed retrieval finished dev before the kill"
"${mpiexec[@]}" -n 2 "$dgr" "${retrieve[@]}" --out "$work/r-part" > "$work/r-resumed.log" 2>&1 || { cat "$work/r-resumed.log"; fail "retrieve resume"; }
grep -q "continuing .*run.dev.trec: [0-9]* of" "$work/r-resumed.log" || { cat "$work/r-resumed.log"; fail "retrieve did not continue"; }
for f in run.dev.trec keys.dev.jsonl run.test.trec keys.test.jsonl; do
  cmp "$work/r-full/$f" "$work/r-part/$f" || fail "retrieve: $f differs from the uninterrupted retrieval"
done
! compgen -G "$work/r-part/*.partial*" > /dev/null || fail "retrieve left its journal behind"
echo "PASS: mining stopped ($done1 queries), killed and resumed equals the uninterrupted mining byte for byte; so does retrieval"
