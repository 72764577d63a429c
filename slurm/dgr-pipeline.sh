#!/usr/bin/env bash
# dgr-pipeline.sh: submits the whole pipeline as a chain of Slurm jobs, each starting only when the one before
# it completed (sbatch --dependency=afterok): index -> stage 1 -> mine -> teacher (BM25) + prepare -> stage 2.
# Training and mining go through the preemptible template (requeue.sh: a stop signal checkpoints, the job is
# requeued under the same id, so the next job of the chain still waits for it to complete); the short steps run
# as one-task jobs. Prints the job ids, the last one being stage 2's.
#
#   slurm/dgr-pipeline.sh --data DATA --out RUNS [--template slurm/dgr-multinode-cpu.sbatch]
#                         [--stage1 "TRAIN FLAGS"] [--mine "MINE FLAGS"] [--stage2 "TRAIN FLAGS"] [-- SBATCH OPTIONS]
#
# --data: the data set (corpus.tsv, queries/qrels.SPLIT.tsv); the index goes to DATA/index (an existing one is
# kept: rebuilding it would orphan models made with it). --out: RUNS/stage1, RUNS/mined, RUNS/teacher.trec,
# RUNS/prepared, RUNS/stage2. The flag strings are split on spaces and passed on (e.g. --stage1 "--config
# configs/stage1-small.toml --train-split train-stage1", --mine "--split train-stage2 --views title,body").
# Everything after -- goes to every sbatch call (e.g. --partition, --account, --nodes for the template's jobs).
# Environment: DGR (default: dgr on PATH), DGR_SLURM_DIR (default: the directory of this script), and
# everything the templates read (DGR_LAUNCHER, DGR_LOG_DIR, ...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data="" out="" template="" stage1="" mine="" stage2=""
sbatch_opts=()
while (($#)); do
  case $1 in
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --template) template=$2; shift 2 ;;
    --stage1) stage1=$2; shift 2 ;;
    --mine) mine=$2; shift 2 ;;
    --stage2) stage2=$2; shift 2 ;;
    --) shift; sbatch_opts=("$@"); break ;;
    *) echo "dgr-pipeline.sh: unknown argument '$1' (usage: see the head of this script)" >&2; exit 2 ;;
  esac
done
[[ -n $data && -n $out ]] || { echo "dgr-pipeline.sh: give --data DATA and --out RUNS" >&2; exit 2; }
[[ -f $data/corpus.tsv ]] || { echo "dgr-pipeline.sh: $data/corpus.tsv not found" >&2; exit 2; }
dgr=${DGR:-$(command -v dgr || true)}
[[ -n $dgr && -x $dgr ]] || { echo "dgr-pipeline.sh: no dgr on PATH: install it (cmake --install) or set DGR" >&2; exit 2; }
template=${template:-${DGR_SLURM_DIR:-$here}/dgr-multinode-cpu.sbatch}
[[ -f $template ]] || { echo "dgr-pipeline.sh: template $template not found" >&2; exit 2; }
command -v sbatch > /dev/null || { echo "dgr-pipeline.sh: sbatch not found (not on a Slurm cluster?)" >&2; exit 2; }
mkdir -p "$out"
data=$(cd "$data" && pwd)
out=$(cd "$out" && pwd)
read -r -a stage1_args <<<"$stage1"
read -r -a mine_args <<<"$mine"
read -r -a stage2_args <<<"$stage2"
export DGR=$dgr DGR_SLURM_DIR=${DGR_SLURM_DIR:-$here}

submit() {  # submit AFTER_JOB SBATCH_ARGS...: prints the new job id
  local after=$1; shift
  local dep=()
  [[ -z $after ]] || dep=(--dependency="afterok:$after" --kill-on-invalid-dep=yes)
  sbatch --parsable "${dep[@]}" "${sbatch_opts[@]}" "$@"
}
q() { printf '%q ' "$@"; }

index_job=""
if [[ ! -d $data/index ]]; then
  index_job=$(submit "" --job-name=dgr-index --ntasks=1 --output="$out/index.out" \
    --wrap="$(q "$dgr" index --data "$data" --out "$data/index")")
fi
train1=$(submit "$index_job" --job-name=dgr-stage1 --output="$out/stage1.out" \
  "$template" train --stage generate --data "$data" --out "$out/stage1" "${stage1_args[@]}")
mined=$(submit "$train1" --job-name=dgr-mine --output="$out/mine.out" \
  "$template" mine --data "$data" --model "$out/stage1/model.h5" --out "$out/mined" "${mine_args[@]}")
prepare=$(submit "$mined" --job-name=dgr-prepare --ntasks=1 --output="$out/prepare.out" \
  --wrap="$(q "$dgr" teacher bm25 --mined "$out/mined" --data "$data" --out "$out/teacher.trec") && $(q "$dgr" prepare --mined "$out/mined" --teacher "$out/teacher.trec" --out "$out/prepared")")
train2=$(submit "$prepare" --job-name=dgr-stage2 --output="$out/stage2.out" \
  "$template" train --stage distill --data "$data" --init-model "$out/stage1/model.h5" --prepared "$out/prepared" \
  --out "$out/stage2" "${stage2_args[@]}")
echo "dgr-pipeline.sh: index ${index_job:-(exists)} -> stage 1 $train1 -> mine $mined -> teacher+prepare $prepare -> stage 2 $train2"
echo "$train2"
