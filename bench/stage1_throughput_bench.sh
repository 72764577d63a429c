#!/usr/bin/env bash
# Stage-1 training throughput, dgr against the plain PyTorch reference (Debian's python3-torch), on 1 and 2
# ranks, in one run: same model shape, data distribution, steps, per-rank batch and thread count, alternating
# REPS times between
#   (a) python reference, 1 process
#   (b) dgr, 1 rank
#   (c) python reference, 2 independent processes started together (the per-rank reference under the same
#       2-process load; their examples/s are summed)
#   (d) dgr, 2 ranks under mpiexec (GradientReducer; global batch = 2 x per-rank batch; examples/s summed)
#   (e) dgr, 2 independent 1-rank processes started together (no communication at all; examples/s
#       summed): what two processes can do on this machine, the ceiling of (d)
# Prints every line, the median examples/s of each, the per-rank ratios dgr/python at 1 rank (b/a) and at
# 2 ranks (d/c) (issue target: >= 1.2), dgr's scaling 2 ranks / 1 rank (d/b) (issue target: >= 1.9), and
# the same for two independent processes (e/b) and 2 ranks against them (d/e).
# Usage: bench/stage1_throughput_bench.sh [BUILD_DIR] [STEPS] [REPS] [THREADS]
#   env: PYTHON (default /usr/bin/python3), MPIEXEC (default mpiexec), ALLOCATOR (dgr's CPU allocator:
#   caching, the default and what `dgr train` uses, or system: LibTorch's own; trainer/cpu_allocator.h)
set -euo pipefail
build=${1:-build}
steps=${2:-30}
reps=${3:-3}
threads=${4:-1}
allocator=${ALLOCATOR:-caching}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-/usr/bin/python3}
bench="$build/bench/stage1_throughput_bench"
[[ -x $bench ]] || { echo "no $bench: cmake --build $build --target stage1_throughput_bench" >&2; exit 1; }
mpi=("${MPIEXEC:-mpiexec}" -n 2 --oversubscribe --bind-to none)
[[ $(id -u) == 0 ]] && mpi+=(--allow-run-as-root)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

val() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
check() { [[ -n $1 ]] || { echo "no examples_per_s in: $2" >&2; exit 1; }; }
py1=() dgr1=() py2=() dgr2=() ind2=()
for ((r = 0; r < reps; ++r)); do
  # (a) python, 1 process
  a=$("$python" "$here/stage1_reference.py" --steps $steps --threads $threads --seed $r); echo "$a"
  py1+=("$(val examples_per_s "$a")"); check "${py1[-1]}" "$a"
  # (b) dgr, 1 rank
  b=$("$bench" --steps=$steps --threads=$threads --allocator=$allocator --seed=$r); echo "$b"
  dgr1+=("$(val examples_per_s "$b")"); check "${dgr1[-1]}" "$b"
  # (c) python, 2 processes at once (seeds r and r+1, as dgr's ranks use seed + rank), starting their
  #     steps together (--sync-dir)
  sync="$tmp/sync$r"; mkdir "$sync"
  "$python" "$here/stage1_reference.py" --steps $steps --threads $threads --seed $r \
    --sync-dir "$sync" --sync-count 2 >"$tmp/p0" & p0=$!
  "$python" "$here/stage1_reference.py" --steps $steps --threads $threads --seed $((r + 1)) \
    --sync-dir "$sync" --sync-count 2 >"$tmp/p1" & p1=$!
  wait $p0; wait $p1
  c0=$(<"$tmp/p0") c1=$(<"$tmp/p1")
  e0=$(val examples_per_s "$c0") e1=$(val examples_per_s "$c1"); check "$e0" "$c0"; check "$e1" "$c1"
  sum=$(awk -v x="$e0" -v y="$e1" 'BEGIN {printf "%.2f", x + y}')
  echo "$c0 process=0/2"; echo "$c1 process=1/2"; echo "impl=python processes=2 examples_per_s=$sum (sum)"
  py2+=("$sum")
  # (d) dgr, 2 ranks
  d=$("${mpi[@]}" "$bench" --steps=$steps --threads=$threads --allocator=$allocator --seed=$r); echo "$d"
  dgr2+=("$(val examples_per_s "$d")"); check "${dgr2[-1]}" "$d"
  # (e) dgr, 2 independent 1-rank processes at once (seeds r and r+1)
  "$bench" --steps=$steps --threads=$threads --allocator=$allocator --seed=$r >"$tmp/d0" & q0=$!
  "$bench" --steps=$steps --threads=$threads --allocator=$allocator --seed=$((r + 1)) >"$tmp/d1" & q1=$!
  wait $q0; wait $q1
  f0=$(<"$tmp/d0") f1=$(<"$tmp/d1")
  g0=$(val examples_per_s "$f0") g1=$(val examples_per_s "$f1"); check "$g0" "$f0"; check "$g1" "$f1"
  sum=$(awk -v x="$g0" -v y="$g1" 'BEGIN {printf "%.2f", x + y}')
  echo "impl=dgr independent_processes=2 examples_per_s=$sum (sum of $g0 and $g1)"
  ind2+=("$sum")
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
awk -v a="$(median "${py1[@]}")" -v b="$(median "${dgr1[@]}")" -v c="$(median "${py2[@]}")" \
    -v d="$(median "${dgr2[@]}")" -v e="$(median "${ind2[@]}")" -v t="$threads" -v n="$reps" -v alloc="$allocator" 'BEGIN {
  printf "threads %d, dgr allocator %s, medians of %d: examples/s total (per rank)\n", t, alloc, n;
  printf "  1 rank : python %.1f, dgr %.1f; per-rank ratio dgr/python %.2f (target >= 1.2)\n", a, b, b / a;
  printf "  2 ranks: python %.1f (%.1f), dgr %.1f (%.1f); per-rank ratio dgr/python %.2f (target >= 1.2)\n", c, c / 2, d, d / 2, d / c;
  printf "  scaling: dgr 2 ranks / 1 rank %.2f (target >= 1.9); python 2 processes / 1 %.2f\n", d / b, c / a;
  printf "  ceiling: 2 independent dgr processes %.1f = %.2f x 1 rank; dgr 2 ranks reach %.2f of it\n", e, e / b, d / e;
}'
