#!/usr/bin/env bash
# The README's main command: installs the dependencies, builds dgr and runs the main job on the embedded
# default data set: build and validate the data set, the BM25 baseline, `dgr index` (tokenizer + FM-index),
# stage 1 (MINDER) on 2 ranks, FM-index-constrained retrieval of dev and test on 2 ranks, and the metrics
# of both side by side. Distillation (stage 2) is added when it lands.
# Usage: scripts/main.sh [--subset tiny|small|full] [--ranks N] [--minutes-budget] [-- extra `dgr train` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
subset=tiny
ranks=2
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --subset) subset="$2"; shift 2 ;;
    --subset=*) subset="${1#*=}"; shift ;;
    --ranks) ranks="$2"; shift 2 ;;
    --ranks=*) ranks="${1#*=}"; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "main.sh: unknown argument '$1' (usage: scripts/main.sh [--subset tiny|small|full] [--ranks N] [-- dgr train flags])" >&2; exit 2 ;;
  esac
done
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target dgr
dgr=build/launcher/dgr
data=data/debian-$subset
run=runs/stage1-$subset
mpi=(mpiexec --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)

$dgr data build-debian --subset "$subset" --out "$data" --force
$dgr data check --data "$data"
$dgr bm25 --data "$data" --split dev --split test | tee "$data/bm25.txt"
$dgr index --data "$data" --out "$data/index"
rm -rf "$run"  # a fresh run each time (to resume an interrupted one, run the `dgr train` line below yourself)
start=$(date +%s)
"${mpi[@]}" -n "$ranks" $dgr train --stage generate --data "$data" --out "$run" --config "configs/stage1-$subset.toml" "${extra[@]}"
echo "stage 1: $(( $(date +%s) - start )) s on $ranks ranks"
"${mpi[@]}" -n "$ranks" $dgr retrieve --data "$data" --model "$run/model.h5" --split dev --split test --out "$run" \
  --config "configs/stage1-$subset.toml" | tee "$run/retrieve.txt"
echo
echo "== $subset: BM25 against dgr stage 1 (MINDER, trained from scratch) =="
cat "$data/bm25.txt" "$run/retrieve.txt"
