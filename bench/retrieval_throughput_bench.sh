#!/usr/bin/env bash
# Retrieval throughput of `dgr retrieve` (FM-index-constrained beam search, beam 10, depth 100) on a data
# set's dev and test queries, on 1 rank and on 2 ranks (mpiexec), with --views title and --views title,body.
# Prints dgr retrieve's line per split ("... N queries, X queries/s on R ranks: R@1 ...") for every
# configuration, then a summary of the queries/s. The runs go to a temporary directory, not the model's.
# With few queries the first split (dev) also pays the warm-up (first forward passes, index pages), so
# its queries/s reads low; compare test, or run with all queries.
# Usage: bench/retrieval_throughput_bench.sh [BUILD_DIR] [DATA_DIR] [MODEL] [MAX_QUERIES]
#   BUILD_DIR default build; DATA_DIR default data/debian-tiny (index in DATA_DIR/index); MODEL default
#   runs/eA/model.h5; MAX_QUERIES (also env MAX_QUERIES) = only the first N queries of each split, 0 = all.
#   env: THREADS = LibTorch threads per rank (default 0: dgr's default, the node's cores / ranks),
#        MPIEXEC (default mpiexec), RANKS (default "1 2"), VIEWS (default "title title,body").
set -euo pipefail
build=${1:-build}
data=${2:-data/debian-tiny}
model=${3:-runs/eA/model.h5}
max_queries=${4:-${MAX_QUERIES:-0}}
threads=${THREADS:-0}
dgr="$build/launcher/dgr"
[[ -x $dgr ]] || { echo "no $dgr: cmake --build $build --target dgr" >&2; exit 1; }
[[ -f $model ]] || { echo "no model $model" >&2; exit 1; }
mpi=("${MPIEXEC:-mpiexec}" --oversubscribe --bind-to none)
[[ $(id -u) == 0 ]] && mpi+=(--allow-run-as-root)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

summary=()
for views in ${VIEWS:-title title,body}; do
  for ranks in ${RANKS:-1 2}; do
    out="$tmp/${views/,/+}.r$ranks"; mkdir -p "$out"
    cmd=("$dgr" retrieve --data "$data" --model "$model" --out "$out" --split dev --split test
         --views "$views" --beam 10 --threads "$threads" --max-queries "$max_queries")
    echo "== views $views, $ranks rank(s)"
    if ((ranks > 1)); then log=$("${mpi[@]}" -n "$ranks" "${cmd[@]}" 2>&1); else log=$("${cmd[@]}" 2>&1); fi || {
      echo "$log" >&2; echo "dgr retrieve failed (views $views, $ranks ranks)" >&2; exit 1; }
    lines=$(grep -E 'queries/s on [0-9]+ ranks' <<<"$log") || { echo "$log" >&2; echo "no queries/s line" >&2; exit 1; }
    echo "$lines"
    while read -r line; do
      split=$(sed -n 's/^dgr \([^ ]*\) .*/\1/p' <<<"$line")
      qps=$(sed -n 's/.* \([0-9.]*\) queries\/s on .*/\1/p' <<<"$line")
      summary+=("$(printf '%-11s %-7s %d rank(s): %s queries/s' "$views" "$split" "$ranks" "$qps")")
    done <<<"$lines"
  done
done
echo "== queries/s (beam 10, threads per rank $( ((threads)) && echo "$threads" || echo default), max queries $( ((max_queries)) && echo "$max_queries" || echo all))"
printf '%s\n' "${summary[@]}"
