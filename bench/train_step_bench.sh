#!/usr/bin/env bash
# Training-step benchmark, back to back in one run: dgr (GradientReducer over the ring communicator) and
# PyTorch DDP over gloo (Debian's python3-torch), on 1 and 2 ranks, one thread per rank.
# Prints each line and the ratios: dgr/DDP step time on 2 ranks, scaling efficiency 1 -> 2 ranks
# (step time on 1 rank / step time on 2 ranks: the work per rank is the same), and dgr's exposed
# communication as a share of its communication time.
# Usage: bench/train_step_bench.sh [BUILD_DIR] [STEPS] [dgr bench options, e.g. --piece-mib=4]
set -euo pipefail
build=${1:-build}
steps=${2:-30}
shift $(( $# < 2 ? $# : 2 ))
mpi=(mpiexec --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)
val() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
d1=$("${mpi[@]}" -n 1 "$build/bench/train_step_bench" --steps=$steps "$@"); echo "$d1"
p1=$(/usr/bin/python3 bench/ddp_reference.py --ranks 1 --steps $steps 2>/dev/null); echo "$p1"
d2=$("${mpi[@]}" -n 2 "$build/bench/train_step_bench" --steps=$steps "$@"); echo "$d2"
p2=$(/usr/bin/python3 bench/ddp_reference.py --ranks 2 --steps $steps 2>/dev/null); echo "$p2"
awk -v d1="$(val step_ms_median "$d1")" -v d2="$(val step_ms_median "$d2")" \
    -v p1="$(val step_ms_median "$p1")" -v p2="$(val step_ms_median "$p2")" \
    -v comm="$(val comm_ms_median "$d2")" -v exposed="$(val exposed_comm_ms_median "$d2")" 'BEGIN {
  printf "ratio dgr/ddp step time, 1 rank:   %.3f (target for 2 ranks <= 0.95)\n", d1 / p1;
  printf "ratio dgr/ddp step time, 2 ranks:  %.3f (target <= 0.95)\n", d2 / p2;
  printf "scaling efficiency 1->2 ranks:     dgr %.3f  ddp %.3f (target >= 0.95)\n", d1 / d2, p1 / p2;
  printf "dgr exposed / total communication: %.3f (target <= 0.25)\n", (comm > 0 ? exposed / comm : 0);
}'
