#!/usr/bin/env bash
# Behaviour is pinned: the stage-1 and stage-2 pipelines on the synthetic data set, at 1 and 2 ranks with
# fixed seeds, must export the same tensors (every array of every model.h5, bit for bit; not the file bytes,
# which carry HDF5 timestamps) and write the same TREC runs (retrieve, mine) as when tests/golden/
# pipeline_digests.txt was recorded. fp32 on the CPU is deterministic for a given BLAS kernel set, so the
# digests are compared only when `dgr --version` names the kernels they were recorded with and the CPU's
# AVX-512 support is the same (else: skipped, 77). A change that alters them on purpose records them again
# (--record) and says why in its commit.
# The digests are computed by Debian's h5py (/usr/bin/python3, python3-h5py).
# Usage: pipeline_digests_test.sh [--record] DGR MPIEXEC [MPIEXEC_FLAGS...]
set -euo pipefail
record=0
if [[ ${1:-} == --record ]]; then record=1; shift; fi
dgr=$1; shift
mpiexec=("$@")
golden=$(dirname "$0")/golden/pipeline_digests.txt
work=$(mktemp -d /tmp/dgr_digests.XXXXXX)
trap 'rm -rf "$work"' EXIT
data=$work/data
mkdir -p "$data"
python3 "$(dirname "$0")/synthetic_data.py" "$data"
fail() { echo "FAIL: $*"; exit 1; }
quiet() { local log=$1; shift; "$@" > "$log" 2>&1 || { cat "$log"; fail "$*"; }; }

# The kernels: OpenBLAS's, and whether LibTorch's own may dispatch to AVX-512 on this CPU.
blas=$("$dgr" --version | grep -E '^(OpenBLAS|BLAS:)' || true)
[[ -n $blas ]] || fail "dgr --version names no BLAS kernels"
blas="$blas; $(grep -q avx512f /proc/cpuinfo && echo avx512 || echo no-avx512)"
if [[ $record -eq 0 ]]; then
  recorded=$(grep '^# blas: ' "$golden" | sed 's/^# blas: //')
  if [[ "$recorded" != "$blas" ]]; then
    echo "skipped: the digests were recorded with '$recorded', this machine uses '$blas'"
    exit 77
  fi
fi

quiet "$work/index.log" "$dgr" index --data "$data" --out "$data/index" --vocab-size 200
common=(--data "$data" --threads 1 --progress-every-s 0 --eval-every 0 --eval-split dev --eval-max-queries 2
        --beam 2 --seed 3)
for np in 1 2; do
  extra=()
  [[ $np -eq 2 ]] && extra=(--ema-decay 0.9)  # the moving average is pinned too
  quiet "$work/s1-$np.log" "${mpiexec[@]}" -n $np "$dgr" train --stage generate "${common[@]}" --out "$work/s1-$np" \
      --preset test --epochs 4 --batch 16 --views title,body --eval-views title "${extra[@]}"
  quiet "$work/r1-$np.log" "${mpiexec[@]}" -n $np "$dgr" retrieve --data "$data" --model "$work/s1-$np/model.h5" \
      --split dev --split test --views title,body --beam 4 --depth 10 --threads 1 --out "$work/s1-$np"
done
quiet "$work/mine.log" "${mpiexec[@]}" -n 2 "$dgr" mine --data "$data" --model "$work/s1-1/model.h5" --split train \
    --depth 20 --max-keys 6 --views title,body --beam 3 --threads 1 --round-size 4 --out "$work/mined"
quiet "$work/teacher.log" "$dgr" teacher bm25 --mined "$work/mined" --data "$data" --out "$work/teacher.trec"
quiet "$work/prepare.log" "$dgr" prepare --mined "$work/mined" --teacher "$work/teacher.trec" --out "$work/prep" \
    --shard-size 7 --min-negatives 3 --max-score-gap 1e9
for np in 1 2; do
  loss=dgr
  [[ $np -eq 2 ]] && loss=ltrgr
  quiet "$work/s2-$np.log" "${mpiexec[@]}" -n $np "$dgr" train --stage distill "${common[@]}" --out "$work/s2-$np" \
      --prepared "$work/prep" --init-model "$work/s1-1/model.h5" --loss $loss --epochs 2 --batch 4 --views title
  quiet "$work/r2-$np.log" "${mpiexec[@]}" -n $np "$dgr" retrieve --data "$data" --model "$work/s2-$np/model.h5" \
      --split dev --split test --views title,body --beam 2 --depth 10 --threads 1 --out "$work/s2-$np"
done

/usr/bin/python3 -I - "$work" > "$work/digests.txt" <<'PY'
import hashlib, os, sys
import h5py
work = sys.argv[1]
for run in ("s1-1", "s1-2", "s2-1", "s2-2"):
    with h5py.File(os.path.join(work, run, "model.h5"), "r") as f:
        arrays = []
        f.visititems(lambda name, obj: arrays.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in sorted(arrays):
            a = f[name][()]
            h = hashlib.sha256(f"{a.dtype.str} {a.shape}".encode())
            h.update(a.tobytes() if hasattr(a, "tobytes") else bytes(a))
            print(f"{run}/model.h5:{name} {h.hexdigest()}")
    for split in ("dev", "test"):
        path = os.path.join(work, run, f"run.{split}.trec")
        assert os.path.getsize(path) > 0, f"{path} is empty: the pinned models must retrieve"
        print(f"{run}/run.{split}.trec {hashlib.sha256(open(path, 'rb').read()).hexdigest()}")
print(f"mined/run.trec {hashlib.sha256(open(os.path.join(work, 'mined', 'run.trec'), 'rb').read()).hexdigest()}")
PY
if [[ $record -eq 1 ]]; then
  mkdir -p "$(dirname "$golden")"
  { echo "# Digests of the pipelines in tests/pipeline_digests_test.sh (record again with --record; say why)."
    echo "# blas: $blas"
    cat "$work/digests.txt"; } > "$golden"
  echo "recorded $(wc -l < "$work/digests.txt") digests in $golden"
  exit 0
fi
if ! diff <(grep -v '^#' "$golden") "$work/digests.txt" > "$work/diff.txt"; then
  cat "$work/diff.txt"
  fail "the exported tensors or runs differ from the recorded ones (lines above: < recorded, > now)"
fi
echo "ok: $(wc -l < "$work/digests.txt") digests equal the recorded ones"
