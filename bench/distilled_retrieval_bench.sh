#!/usr/bin/env bash
# Retrieval time of a distilled model against the stage-1 model it started from: the same `dgr retrieve`
# (FM-index-constrained beam search, beam 10, depth 100, title view, 1 rank x 1 thread) over the same
# queries, alternating the two models ROUNDS times so that both see the same machine. Prints each run's
# queries/s and the ratio distilled / stage 1 of the medians (1.00 = no cost at inference).
# Usage: bench/distilled_retrieval_bench.sh STAGE1_MODEL DISTILLED_MODEL [DATA_DIR] [SPLIT]
#   DATA_DIR default data/debian-tiny, SPLIT default train (214 queries on tiny); env BUILD (default build),
#   ROUNDS (default 3), VIEWS (default title).
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n 2,8p "$0" >&2; exit 2; }
stage1=$1; distilled=$2; data=${3:-data/debian-tiny}; split=${4:-train}
dgr=${BUILD:-build}/launcher/dgr
[[ -x $dgr ]] || { echo "no $dgr: cmake --build ${BUILD:-build} --target dgr" >&2; exit 1; }
for m in "$stage1" "$distilled"; do [[ -f $m ]] || { echo "no model $m" >&2; exit 1; }; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -a qs1 qs2
run() {  # model -> queries/s
  "$dgr" retrieve --data "$data" --model "$1" --split "$split" --out "$tmp" --views "${VIEWS:-title}" \
    --no-unigram-keys --beam 10 --threads 1 2>/dev/null | sed -n 's/.* \([0-9.]*\) queries\/s on .*/\1/p'
}
for ((r = 1; r <= ${ROUNDS:-3}; ++r)); do
  a=$(run "$stage1"); b=$(run "$distilled")
  qs1+=("$a"); qs2+=("$b")
  echo "round $r: stage 1 $a queries/s, distilled $b queries/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
m1=$(median "${qs1[@]}"); m2=$(median "${qs2[@]}")
echo "median: stage 1 $m1 queries/s, distilled $m2 queries/s, ratio distilled/stage 1 $(awk -v a="$m2" -v b="$m1" 'BEGIN {printf "%.3f", a / b}')"
