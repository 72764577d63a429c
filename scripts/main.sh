#!/usr/bin/env bash
# The README's main command: installs the dependencies, builds dgr and runs the main job on the embedded
# default data set: copy the pinned data set (datasets/; built from the Debian lists with --rebuild-data or
# for full) and validate it, the BM25 baseline, `dgr index` (tokenizer + FM-index), the split of the training
# queries between the stages (`dgr data split`), stage 1 (MINDER) on 2 ranks on its part, retrieval of dev
# and test, then stage 2: mining of the held-out training queries,
# the built-in BM25 teacher, the prepared distillation data set, stage 2 with the generation loss only
# (the control), LTRGR's and DGR's losses, retrieval with each, and one table of BM25, stage 1, the
# control, LTRGR and DGR on dev, test and both pooled, LTRGR and DGR marked where a paired test (Holm) finds
# them different from the control or from stage 1, and DGR where it differs from LTRGR.
# Usage: [DGR=binary] scripts/main.sh [--subset tiny|small|full] [--ranks N] [--seed N] [--hold-out F]
#                                     [--add-top K] [--rebuild-data] [-- extra stage-1 `dgr train` flags]
# --hold-out F: the fraction of the training queries held out of stage 1 for mining and stage 2 (`dgr data
# split`; default 0.5: a student that trained on a query ranks its positive first, docs/results.md "Held-out
# distillation queries"); 0: stage 1 trains on every training query and stage 2 mines them all again.
# --add-top K: BM25's top K passages of each stage-2 query join its mined list (`dgr mine --add-run`; default
# 10, as the released code's teacher top-10 option); 0: the retrieved lists only.
set -euo pipefail
cd "$(dirname "$0")/.."
subset=tiny
ranks=2
extra=()
extra2=()
seed=""
hold_out=0.5
add_top=10
rebuild_data=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --subset) subset="$2"; shift 2 ;;
    --subset=*) subset="${1#*=}"; shift ;;
    --ranks) ranks="$2"; shift 2 ;;
    --ranks=*) ranks="${1#*=}"; shift ;;
    --seed) seed="$2"; shift 2 ;;
    --seed=*) seed="${1#*=}"; shift ;;
    --hold-out) hold_out="$2"; shift 2 ;;
    --hold-out=*) hold_out="${1#*=}"; shift ;;
    --add-top) add_top="$2"; shift 2 ;;
    --add-top=*) add_top="${1#*=}"; shift ;;
    --rebuild-data) rebuild_data=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "main.sh: unknown argument '$1' (usage: scripts/main.sh [--subset tiny|small|full] [--ranks N] [--seed N] [--hold-out F] [--add-top K] [--rebuild-data] [-- dgr train flags])" >&2; exit 2 ;;
  esac
done
# DGR=/path/to/dgr: run that binary instead of installing and building (e.g. a copy kept for a series of
# seeds while the checkout changes).
if [[ -n ${DGR:-} ]]; then
  dgr=$DGR
else
  scripts/install-deps.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build build -j"$(nproc)" --target dgr
  dgr=build/launcher/dgr
fi
data=data/debian-$subset
run=runs/stage1-$subset${seed:+-seed$seed}
run2=runs/distill-$subset${seed:+-seed$seed}
if [[ -n $seed ]]; then extra=(--seed "$seed" "${extra[@]}"); extra2=(--seed "$seed"); fi
mpi=(mpiexec --oversubscribe --bind-to none)
[[ $(id -u) -eq 0 ]] && mpi+=(--allow-run-as-root)

# tiny and small: the pinned copies in datasets/ (their SHA-256 checked by `dgr data check` against the
# manifest), so that figures do not move with the day's Debian lists; full, or --rebuild-data: built from
# the lists of the day.
if [[ -d datasets/debian-$subset && $rebuild_data -eq 0 ]]; then
  rm -rf "$data" && mkdir -p "$data" && cp "datasets/debian-$subset"/* "$data"/
  echo "data: the pinned $subset set (datasets/debian-$subset)"
else
  $dgr data build-debian --subset "$subset" --out "$data" --force
fi
$dgr data check --data "$data"
$dgr bm25 --data "$data" --split dev --split test | tee "$data/bm25.txt"
$dgr index --data "$data" --out "$data/index" --force  # rebuilt on every run (its runs/ are rebuilt too)
# The training queries of each stage: with --hold-out F, stage 1 trains on train-stage1 and stage 2 mines and
# trains on train-stage2 (a fraction F drawn by a hash of the query ids, the same for every seed).
if awk "BEGIN{exit !($hold_out > 0)}"; then
  $dgr data split --data "$data" --from train --first train-stage1 --second train-stage2 --fraction "$hold_out" --force
  split1=train-stage1 split2=train-stage2
else
  split1=train split2=train
fi
rm -rf "$run" "$run2"  # a fresh run each time (to resume an interrupted one, run its `dgr train` line yourself)
start=$(date +%s)
"${mpi[@]}" -n "$ranks" $dgr train --stage generate --data "$data" --out "$run" --config "configs/stage1-$subset.toml" \
  --train-split "$split1" "${extra[@]}"
echo "stage 1: $(( $(date +%s) - start )) s on $ranks ranks"
"${mpi[@]}" -n "$ranks" $dgr retrieve --data "$data" --model "$run/model.h5" --split dev --split test --out "$run" \
  --config "configs/stage1-$subset.toml"

# Stage 2: mine stage 2's training queries with the stage-1 model, let the teacher (BM25, built in) order the
# candidates, prepare the distillation data set, then train stage 2 three times from the stage-1 model on the
# same queries with the same schedule and seed: the generation loss only (the control that isolates the
# ranking loss, method.md section 11), LTRGR's loss and DGR's.
start=$(date +%s)
added=()
if [[ $add_top -gt 0 ]]; then
  $dgr bm25 --data "$data" --split "$split2"  # -> $data/bm25.$split2.trec
  added=(--add-run "$data/bm25.$split2.trec" --add-top "$add_top")
fi
"${mpi[@]}" -n "$ranks" $dgr mine --data "$data" --model "$run/model.h5" --split "$split2" --out "$run2/mined" \
  --config "configs/distill-$subset.toml" "${added[@]}"
$dgr teacher bm25 --mined "$run2/mined" --data "$data" --out "$run2/teacher.bm25.trec"
$dgr prepare --mined "$run2/mined" --teacher "$run2/teacher.bm25.trec" --out "$run2/prepared"
for loss in generation ltrgr dgr; do
  "${mpi[@]}" -n "$ranks" $dgr train --stage distill --loss "$loss" --data "$data" --init-model "$run/model.h5" \
    --prepared "$run2/prepared" --out "$run2/$loss" --config "configs/distill-$subset.toml" "${extra2[@]}"
  "${mpi[@]}" -n "$ranks" $dgr retrieve --data "$data" --model "$run2/$loss/model.h5" --split dev --split test \
    --out "$run2/$loss" --config "configs/distill-$subset.toml"
done
echo "stage 2 (mine, teacher, prepare, control, LTRGR, DGR): $(( $(date +%s) - start )) s on $ranks ranks"

echo
echo "== $subset: BM25 (the teacher), stage 1 (MINDER), the generation-only control, LTRGR and DGR distilled from BM25 =="
$dgr report --data "$data" --split dev --split test --out "$run2/report.md" \
  --system "BM25=$data/bm25.{split}.trec" --system "stage 1 (MINDER)=$run/run.{split}.trec" \
  --system "generation only=$run2/generation/run.{split}.trec" --system "LTRGR=$run2/ltrgr/run.{split}.trec" \
  --system "DGR=$run2/dgr/run.{split}.trec" \
  --compare "LTRGR:generation only" --compare "DGR:generation only" --compare "DGR:LTRGR" \
  --compare "LTRGR:stage 1 (MINDER)" --compare "DGR:stage 1 (MINDER)"
echo "(table saved in $run2/report.md; every run's curves: $dgr plot $run/train.jsonl $run2/dgr/train.jsonl --out plot.png)"
