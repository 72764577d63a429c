#!/usr/bin/env bash
# SIGKILL one rank of a 3-rank job in the middle of training: the other ranks must end (non-zero) within
# the deadline, the launcher's message must name the dead rank, and the last committed checkpoint must be
# intact (a new 3-rank job resumes from it).
# Usage: kill_rank_test.sh DRIVER MPIEXEC [MPIEXEC_FLAGS...]
set -uo pipefail
driver=$1; shift
mpiexec=("$@")
work=$(mktemp -d /tmp/dgr_kill_rank.XXXXXX)
trap 'rm -rf "$work"' EXIT
deadline_s=20

"${mpiexec[@]}" -n 3 "$driver" --dir "$work/ckpt" --stop-at 1000 --seen "$work/seen" --step-delay-ms 100 \
  > "$work/out.txt" 2>&1 &
launcher=$!
for _ in $(seq 1 300); do  # wait until a checkpoint is committed (step 3, saved every 3 steps)
  [[ -f "$work/ckpt/step-00000003/COMMITTED" ]] && break
  sleep 0.1
done
[[ -f "$work/ckpt/step-00000003/COMMITTED" ]] || { echo "FAIL: no checkpoint committed"; cat "$work/out.txt"; exit 1; }
victim=""
for pid in $(pgrep -f "$driver --dir $work/ckpt"); do
  if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=2'; then victim=$pid; fi
done
[[ -n "$victim" ]] || { echo "FAIL: rank 2 not found"; exit 1; }
start=$(date +%s)
kill -9 "$victim"
echo "killed rank 2 (pid $victim)"
rc=0
for _ in $(seq 1 $((deadline_s * 10))); do
  kill -0 "$launcher" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$launcher" 2>/dev/null; then
  echo "FAIL: the job still runs ${deadline_s}s after rank 2 died"; kill -9 "$launcher"; exit 1
fi
wait "$launcher"; rc=$?
elapsed=$(( $(date +%s) - start ))
echo "job ended with exit code $rc after ${elapsed}s"
[[ $rc -ne 0 ]] || { echo "FAIL: the job exited 0"; exit 1; }
grep -Eq 'rank 2|\[\[[0-9]+,[0-9]+\],2\]' "$work/out.txt" || { echo "FAIL: the dead rank is not named:"; cat "$work/out.txt"; exit 1; }
grep -E 'rank 2|\],2\]' "$work/out.txt" | head -3
newest=$(ls -d "$work"/ckpt/step-*/ 2>/dev/null | grep -v '\.tmp' | tail -1)
echo "newest committed checkpoint: $newest"
out=$("${mpiexec[@]}" -n 3 "$driver" --dir "$work/ckpt" --stop-at 12 --seen "$work/seen2" 2>&1) || { echo "FAIL: resume failed"; echo "$out"; exit 1; }
grep -q "world_size=3 first_step=[1-9]" <<<"$out" || { echo "FAIL: did not resume from the checkpoint"; echo "$out"; exit 1; }
echo "ok: $(grep world_size <<<"$out")"
