#!/usr/bin/env bash
# Kill test: SIGKILL the checkpoint writer in the middle of writing step 3 (after step 2 committed), then
# resume: the newest committed step (2) must be loaded and verified byte for byte, never the half-written 3.
# Usage: checkpoint_kill_test.sh DRIVER NP [MPIEXEC FLAGS...]   (NP 1 runs DRIVER directly)
set -euo pipefail
driver=$1
np=$2
shift 2
launch=()
if [[ $np -gt 1 ]]; then launch=("$@" -n "$np"); fi

work=$(mktemp -d /tmp/dgr_ckpt_kill_XXXXXX)
ckpt=$work/ckpt
mkdir -p "$work/pids"
job=
cleanup() {
  for f in "$work"/pids/*.pid; do [[ -f $f ]] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  [[ -n $job ]] && kill -9 "$job" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; ls -laR "$ckpt" >&2 || true; exit 1; }

"${launch[@]}" "$driver" --mode write --dir "$ckpt" --pid-dir "$work/pids" --mib 64 --array-delay-ms 40 &
job=$!

deadline=$((SECONDS + 120))
until [[ -f $ckpt/step-00000002/COMMITTED && -f $ckpt/step-00000003.tmp/model.h5 ]]; do
  kill -0 "$job" 2>/dev/null || fail "the writer exited before step 3 was being written"
  [[ $SECONDS -lt $deadline ]] || fail "step 2 was not committed / step 3 not started within 120 s"
  sleep 0.02
done
sleep 0.3  # well inside the ~1.3 s that writing step 3 takes
[[ ! -e $ckpt/step-00000003 ]] || fail "step 3 was already committed: the kill would not be mid-write"
shopt -s nullglob
pids=("$work"/pids/*.pid)
[[ ${#pids[@]} -eq $np ]] || fail "expected $np pid files, found ${#pids[@]}"
for f in "${pids[@]}"; do kill -9 "$(cat "$f")"; done
rm -f "$work"/pids/*.pid
wait "$job" 2>/dev/null || true
job=
echo "killed the writer while $(du -sh "$ckpt/step-00000003.tmp" | cut -f1) of step 3 were on disk"
[[ -d $ckpt/step-00000003.tmp && ! -e $ckpt/step-00000003 ]] || fail "expected a half-written step-00000003.tmp only"
ls "$ckpt"

"${launch[@]}" "$driver" --mode resume --dir "$ckpt" --mib 64 --expect-step 2 || fail "resume did not verify step 2"
[[ -f $ckpt/step-00000003/COMMITTED && ! -e $ckpt/step-00000003.tmp ]] || fail "step 3 was not rewritten after resume"
echo "PASS: resumed from step 2 after SIGKILL mid-write of step 3 (np=$np)"
