#!/usr/bin/env bash
# Stage-1 training throughput, dgr against the plain PyTorch reference (Debian's python3-torch), back to
# back in one run, same model shape, data distribution, steps and thread count, alternating REPS times.
# Prints every line, the median examples/s of each and the ratio dgr/python (issue target: >= 1.2).
# Usage: bench/stage1_throughput_bench.sh [BUILD_DIR] [STEPS] [REPS] [THREADS]
set -euo pipefail
build=${1:-build}
steps=${2:-30}
reps=${3:-3}
threads=${4:-1}
here=$(cd "$(dirname "$0")" && pwd)
val() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
dgr=() py=()
for ((r = 0; r < reps; ++r)); do
  d=$("$build/bench/stage1_throughput_bench" --steps=$steps --threads=$threads --seed=$r); echo "$d"
  p=$(/usr/bin/python3 "$here/stage1_reference.py" --steps $steps --threads $threads --seed $r); echo "$p"
  dgr+=("$(val examples_per_s "$d")") py+=("$(val examples_per_s "$p")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
awk -v d="$(median "${dgr[@]}")" -v p="$(median "${py[@]}")" -v t="$threads" 'BEGIN {
  printf "threads %d: dgr %.1f examples/s, python %.1f examples/s (medians); ratio dgr/python %.2f (target >= 1.2)\n", t, d, p, d / p;
}'
