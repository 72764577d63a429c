#!/usr/bin/env bash
# A checkpoint written by 2 ranks resumes on 1 and on 3 ranks: the model is the saved one and every
# example of the epoch is seen exactly once across the interrupted and the resumed parts.
# Usage: resume_world_size_test.sh DRIVER MPIEXEC [MPIEXEC_FLAGS...]
set -euo pipefail
driver=$1; shift
mpiexec=("$@")
work=$(mktemp -d /tmp/dgr_resume_ws.XXXXXX)
trap 'rm -rf "$work"' EXIT
examples=50        # kToyExamples
steps_per_epoch=7  # ceil(50 / 8)

first=$("${mpiexec[@]}" -n 2 "$driver" --dir "$work/ckpt" --stop-at 4 --seen "$work/seen-first")
echo "first part (2 ranks): $first"
saved=$(sed -n 's/.*final_parameters=\([0-9a-f]*\).*/\1/p' <<<"$first")
for ranks in 1 3; do
  cp -r "$work/ckpt" "$work/ckpt$ranks"
  out=$("${mpiexec[@]}" -n "$ranks" "$driver" --dir "$work/ckpt$ranks" --stop-at $steps_per_epoch --seen "$work/seen-$ranks")
  echo "resumed on $ranks rank(s): $out"
  grep -q "world_size=$ranks first_step=4 steps_run=3 " <<<"$out" || { echo "FAIL: did not resume at step 4 on $ranks ranks"; exit 1; }
  grep -q "resumed_parameters=$saved " <<<"$out" || { echo "FAIL: resumed parameters differ from the saved ones"; exit 1; }
  # Epoch 0 over both parts: every example exactly once.
  cat "$work"/seen-first.r* "$work"/seen-$ranks.r* | awk '$1 == 0 {print $3}' | sort -n > "$work/epoch0-$ranks"
  total=$(wc -l < "$work/epoch0-$ranks")
  unique=$(sort -u "$work/epoch0-$ranks" | wc -l)
  if [[ $total -ne $examples || $unique -ne $examples ]]; then
    echo "FAIL: on $ranks rank(s) epoch 0 saw $total examples ($unique distinct), expected each of $examples once"
    exit 1
  fi
  echo "ok: $ranks rank(s): each of the $examples examples seen exactly once in epoch 0"
done
