#!/usr/bin/env bash
# The GPU check, for a machine with NVIDIA GPUs (H100/H200), python3 + a CUDA build of torch, CUDA 13 +
# NCCL under /usr/local/cuda and dgr's other dependencies: configures dgr with the NCCL backend and the
# CUDA LibTorch into build-gpu, builds dgr and the NCCL tests (and train_step_bench when that target
# exists), runs `ctest -R nccl`, then a short GPU training smoke run (tiny synthetic data; one rank per GPU,
# `dgr train --device cuda --comm nccl` for a few steps in fp32 and again with --precision bf16; the runs
# must finish with a finite loss and `dgr retrieve --device cuda` must read the model), then the pretrained-
# BART path on the GPU (a randomly initialised BART of bart-base's shape written by transformers, imported,
# indexed with its BPE tokenizer, stage 1 from it, retrieve, mine, teacher, prepare, stage 2, retrieve, all
# with --device cuda) and prints a summary. Finishes within ~7 minutes; exits non-zero when there is no GPU, a step fails, or a test that the GPUs
# present should run reports "skipped".
# Usage: scripts/gpu-check.sh            (env: PYTHON=python3, BUILD_DIR=build-gpu, CUDA_ARCHS=90)
set -euo pipefail
cd "$(dirname "$0")/.."

readonly start_s=$SECONDS
readonly budget_s=420  # everything, including the tests, ends before 7 minutes
readonly smoke_s=75    # kept for the GPU training smoke run (step 6) out of the budget
PYTHON=${PYTHON:-python3}
BUILD_DIR=${BUILD_DIR:-build-gpu}
CUDA_ARCHS=${CUDA_ARCHS:-90}

die() {
  echo "gpu-check: FAILED: $*" >&2
  exit 1
}
say() { echo "gpu-check: $*"; }
# Seconds left of the budget, at most $1.
time_left() {
  local left=$((budget_s - (SECONDS - start_s)))
  if ((left > $1)); then left=$1; fi
  if ((left < 10)); then die "out of time (the whole check must end within ${budget_s} s)"; fi
  echo "$left"
}

# ---- 1. a GPU, and a driver new enough for CUDA 13 ----
gpu_count=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_list=$(nvidia-smi -L 2>/dev/null || true)
  gpu_count=$(grep -c '^GPU ' <<<"$gpu_list" || true)
  if ((gpu_count > 0)); then
    echo "$gpu_list"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1 |
      sed 's/^/gpu-check: GPU 0: /' || true
    nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -n 1 | sed 's/^/gpu-check: driver supports /' || true
  fi
else
  gpu_count=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
fi
if ! [[ "$gpu_count" =~ ^[0-9]+$ ]] || ((gpu_count == 0)); then
  die "no NVIDIA GPU found (nvidia-smi -L lists none): run this on a GPU machine; on CPUs use scripts/test.sh"
fi
say "$gpu_count GPU(s)"

# ---- 2. the CUDA LibTorch of python3's torch ----
torch_prefix=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
  die "'$PYTHON -c \"import torch\"' failed: install a CUDA build of torch for $PYTHON, or set PYTHON=..."
torch_dir="$torch_prefix/Torch"
[[ -f "$torch_dir/TorchConfig.cmake" ]] || die "no TorchConfig.cmake under $torch_dir (is torch installed completely?)"
torch_cuda=$("$PYTHON" -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null || true)
torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [[ -z "$torch_cuda" ]]; then
  say "WARNING: torch $torch_version is a CPU build; the NCCL tests do not need it, train_step_bench will run on CPU"
else
  say "torch $torch_version (CUDA $torch_cuda) at $torch_dir"
fi

# ---- 3. configure ----
command -v cmake >/dev/null 2>&1 || die "cmake not found (scripts/install-deps.sh installs it)"
# A CUDA LibTorch's CMake package enables CMake's CUDA language itself: point it at the toolkit dgr uses
# (its nvcc must match that toolkit) and give it the architecture instead of letting it probe the GPU.
cuda_root=${CUDAToolkit_ROOT:-/usr/local/cuda}
if [[ -z "${CUDACXX:-}" && -x "$cuda_root/bin/nvcc" ]]; then export CUDACXX="$cuda_root/bin/nvcc"; fi
export PATH="$cuda_root/bin:$PATH"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(sed -E 's/^([0-9]+)([0-9])$/\1.\2/' <<<"${CUDA_ARCHS%%;*}")}
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
mkdir -p "$BUILD_DIR"
configure_log="$BUILD_DIR/gpu-check-configure.log"
say "configuring $BUILD_DIR (log: $configure_log)"
if ! timeout "$(time_left 120)" cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DTorch_DIR="$torch_dir" -DDGR_WITH_NCCL=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS" \
  -DCUDAToolkit_ROOT="$cuda_root" -DDGR_BUILD_TESTS=ON >"$configure_log" 2>&1; then
  tail -n 30 "$configure_log" >&2
  die "cmake configure failed or timed out (full log: $configure_log)"
fi
grep -E 'dgr: NCCL' "$configure_log" | sed 's/^-- /gpu-check: /' || true

# ---- 4. build dgr and the NCCL tests (+ train_step_bench) ----
# Target names from the generator's help (Ninja: "name: phony", Makefiles: "... name").
targets_help=$(cmake --build "$BUILD_DIR" --target help 2>/dev/null |
  sed -nE 's/^([A-Za-z0-9_.+-]+): phony$/\1/p; s/^\.\.\. ([A-Za-z0-9_.+-]+)( .*)?$/\1/p' | sort -u)
mapfile -t nccl_targets < <(grep -E 'nccl.*_test$' <<<"$targets_help" || true)
((${#nccl_targets[@]} > 0)) || die "no NCCL test target (e.g. comm_nccl_test) in $BUILD_DIR: was DGR_HAVE_NCCL on?"
build_targets=(dgr "${nccl_targets[@]}")
if grep -qx 'train_step_bench' <<<"$targets_help"; then
  build_targets+=(train_step_bench)
else
  say "no train_step_bench target: building the NCCL tests only"
fi
build_log="$BUILD_DIR/gpu-check-build.log"
say "building ${build_targets[*]} (log: $build_log)"
build_args=()
for target in "${build_targets[@]}"; do build_args+=(--target "$target"); done
if ! timeout "$(time_left 170)" cmake --build "$BUILD_DIR" "${build_args[@]}" -j"$(nproc)" >"$build_log" 2>&1; then
  grep -E -m 20 'error|Error|FAILED' "$build_log" >&2 || tail -n 30 "$build_log" >&2
  die "build failed or timed out (full log: $build_log)"
fi

# ---- 5. the NCCL tests (one at a time: they share the GPUs) ----
test_log="$BUILD_DIR/gpu-check-ctest.log"
test_s=$(($(time_left 200) - smoke_s))
((test_s >= 10)) || die "out of time before the NCCL tests (the whole check must end within ${budget_s} s)"
say "running ctest -R nccl (log: $test_log)"
ctest_rc=0
timeout "$test_s" ctest --test-dir "$BUILD_DIR" -R nccl --output-on-failure --timeout $((test_s - 5)) \
  >"$test_log" 2>&1 || ctest_rc=$?

# ---- 6. GPU training smoke run: dgr train --device cuda (fp32, then bf16), dgr retrieve --device cuda ----
# Tiny synthetic data as tests/stage1_pipeline_test.sh makes it; one rank per GPU; a few steps each.
smoke_dir="$BUILD_DIR/gpu-check-smoke"
smoke_log="$BUILD_DIR/gpu-check-smoke.log"
smoke_status="not run"
rm -rf "$smoke_dir"
mkdir -p "$smoke_dir/data"
: >"$smoke_log"
launch=()
if ((gpu_count > 1)); then
  mpiexec_bin=$(sed -nE 's/^DGR_MPIEXEC:FILEPATH=(.+)$/\1/p' "$BUILD_DIR/CMakeCache.txt")
  [[ -n "$mpiexec_bin" ]] || mpiexec_bin=mpiexec
  launch=("$mpiexec_bin" --oversubscribe --bind-to none -n "$gpu_count")
  [[ $(id -u) -ne 0 ]] || launch+=(--allow-run-as-root)
fi
# The window loss of every "train" event of $1/train.jsonl, which must exist and be finite.
check_loss() {
  "$PYTHON" - "$1/train.jsonl" <<'PY'
import json, math, sys
losses = [json.loads(line)["loss"] for line in open(sys.argv[1]) if '"event": "train"' in line or '"event":"train"' in line]
assert losses, "no train event"
assert all(math.isfinite(x) for x in losses), f"loss not finite: {losses}"
print(f"loss {losses[-1]:.4f} after {len(losses)} logged window(s)")
PY
}
smoke() {
  local precision=$1 out="$smoke_dir/run-$1"
  say "smoke: dgr train --device cuda --comm nccl --precision $precision on $gpu_count rank(s)"
  timeout "$(time_left 60)" "${launch[@]}" "$BUILD_DIR/launcher/dgr" train --stage generate --data "$smoke_dir/data" \
    --out "$out" --preset test --max-steps 4 --batch 16 --threads 2 --views title --eval-every 0 \
    --eval-split dev --eval-max-queries 4 --eval-views title --beam 2 --no-resume --progress-every-s 0 \
    --device cuda --comm nccl --precision "$precision" >>"$smoke_log" 2>&1 || return 1
  grep -q 'start: .* device=cuda:0 ' "$smoke_log" || { echo "no 'device=cuda:0' in the start-up lines" >>"$smoke_log"; return 1; }
  [[ -f "$out/model.h5" ]] || { echo "no $out/model.h5" >>"$smoke_log"; return 1; }
  check_loss "$out" >>"$smoke_log" 2>&1 || return 1
  say "smoke: $precision: $(tail -n 1 "$smoke_log")"
}
smoke_all() {
  "$PYTHON" tests/synthetic_data.py "$smoke_dir/data" >>"$smoke_log" 2>&1 &&
    timeout "$(time_left 30)" "$BUILD_DIR/launcher/dgr" index --data "$smoke_dir/data" --out "$smoke_dir/data/index" \
      --vocab-size 200 >>"$smoke_log" 2>&1 || return 1
  smoke fp32 || return 1
  smoke bf16 || return 1
  say "smoke: dgr retrieve --device cuda"
  timeout "$(time_left 30)" "$BUILD_DIR/launcher/dgr" retrieve --device cuda --data "$smoke_dir/data" \
    --model "$smoke_dir/run-fp32/model.h5" --split dev --views title --beam 2 --depth 10 --threads 2 \
    --out "$smoke_dir/retrieve" >>"$smoke_log" 2>&1 || return 1
  # A model of 4 steps may find nothing (an empty run is a valid answer); the file must be there.
  [[ -f "$smoke_dir/retrieve/run.dev.trec" ]] || { echo "no $smoke_dir/retrieve/run.dev.trec" >>"$smoke_log"; return 1; }
}
if smoke_all; then
  smoke_status="OK (fp32 and bf16 training, retrieve on cuda)"
else
  smoke_status="FAILED (log: $smoke_log)"
  tail -n 30 "$smoke_log" >&2
fi

# ---- 6b. pretrained BART on the GPU: bart-base's shape from transformers, the whole pipeline on cuda ----
# tests/make_tiny_bart.py --shape base: d_model 768, 6 + 6 layers (the vocabulary is a BPE trained on
# datasets/debian-tiny, not GPT-2's: no weights can be downloaded). As tests/bart_end_to_end_test.sh on CPU.
bart_dir="$smoke_dir/bart"
bart_status="not run"
bart_all() {
  local d=datasets/debian-tiny dgr="$BUILD_DIR/launcher/dgr"
  local gpu=(--device cuda --comm nccl --threads 2 --views title,body --eval-every 0 --eval-split dev
             --eval-max-queries 8 --eval-views title,body --no-unigram-keys --no-resume --progress-every-s 0)
  say "bart: bart-base shape from transformers, import, index with its tokenizer"
  timeout "$(time_left 90)" "$PYTHON" tests/make_tiny_bart.py "$d" "$bart_dir/hf" --shape base >>"$smoke_log" 2>&1 &&
    "$dgr" import --format hf --from "$bart_dir/hf" --out "$bart_dir/bart.h5" >>"$smoke_log" 2>&1 &&
    "$dgr" index --data "$d" --out "$bart_dir/index" --tokenizer-model "$bart_dir/hf" >>"$smoke_log" 2>&1 || return 1
  say "bart: stage 1 from the imported weights (bf16), retrieve, mine, teacher, prepare, stage 2, retrieve on cuda"
  timeout "$(time_left 60)" "${launch[@]}" "$dgr" train --stage generate --data "$d" --index "$bart_dir/index" \
    --init-model "$bart_dir/bart.h5" --out "$bart_dir/s1" --max-steps 30 --batch 32 --lr 1e-4 --precision bf16 \
    "${gpu[@]}" >>"$smoke_log" 2>&1 || return 1
  check_loss "$bart_dir/s1" >>"$smoke_log" 2>&1 || return 1
  timeout "$(time_left 30)" "$dgr" retrieve --device cuda --data "$d" --index "$bart_dir/index" \
    --model "$bart_dir/s1/model.h5" --split dev --views title,body --beam 5 --no-unigram-keys --out "$bart_dir/s1" \
    >>"$smoke_log" 2>&1 || return 1
  timeout "$(time_left 45)" "$dgr" mine --device cuda --data "$d" --index "$bart_dir/index" \
    --model "$bart_dir/s1/model.h5" --split train --views title,body --beam 5 --depth 20 --no-unigram-keys \
    --out "$bart_dir/mined" >>"$smoke_log" 2>&1 &&
    "$dgr" teacher bm25 --mined "$bart_dir/mined" --data "$d" --out "$bart_dir/teacher.trec" >>"$smoke_log" 2>&1 &&
    "$dgr" prepare --mined "$bart_dir/mined" --teacher "$bart_dir/teacher.trec" --out "$bart_dir/prepared" \
      --min-negatives 4 --max-score-gap inf >>"$smoke_log" 2>&1 || return 1
  timeout "$(time_left 60)" "${launch[@]}" "$dgr" train --stage distill --data "$d" --index "$bart_dir/index" \
    --init-model "$bart_dir/s1/model.h5" --prepared "$bart_dir/prepared" --out "$bart_dir/s2" --max-steps 4 \
    --batch 4 --precision bf16 "${gpu[@]}" >>"$smoke_log" 2>&1 || return 1
  check_loss "$bart_dir/s2" >>"$smoke_log" 2>&1 || return 1
  timeout "$(time_left 30)" "$dgr" retrieve --device cuda --data "$d" --index "$bart_dir/index" \
    --model "$bart_dir/s2/model.h5" --split dev --views title,body --beam 5 --no-unigram-keys --out "$bart_dir/s2" \
    >>"$smoke_log" 2>&1 || return 1
  [[ -s "$bart_dir/s2/run.dev.trec" ]] || { echo "no $bart_dir/s2/run.dev.trec" >>"$smoke_log"; return 1; }
  say "bart: $(grep 'dgr dev' "$smoke_log" | tail -n 1)"
}
if [[ "$smoke_status" == OK* ]]; then
  if bart_all; then
    bart_status="OK (bart-base shape: import, stage 1, mine, stage 2, retrieve on cuda)"
  else
    bart_status="FAILED (log: $smoke_log)"
    tail -n 30 "$smoke_log" >&2
  fi
fi

# ---- 7. summary ----
echo
echo "==== gpu-check summary ($((SECONDS - start_s)) s) ===="
results=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$test_log" || true)
if [[ -z "$results" ]]; then
  tail -n 40 "$test_log"
  die "ctest ran no NCCL test (rc $ctest_rc, log $test_log)"
fi
sed -E 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: //' <<<"$results"
grep -E 'tests passed|tests failed' "$test_log" || true
failed=0
if ((ctest_rc != 0)); then
  grep -E -A 40 '\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception' "$test_log" | head -n 80 >&2 || true
  echo "gpu-check: ctest exit status $ctest_rc" >&2
  failed=1
fi
# A test that the GPUs present can run must not skip (a skip there means CUDA did not see the GPU:
# usually a driver older than the CUDA 13 runtime; compare "CUDA Version" of nvidia-smi above).
while read -r line; do
  name=$(sed -E 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: ([^ ]+).*/\1/' <<<"$line")
  np=$(sed -nE 's/.*_np([0-9]+)$/\1/p' <<<"$name")
  if [[ "$line" == *Skipped* && -n "$np" ]] && ((np <= gpu_count)); then
    echo "gpu-check: $name was skipped although $gpu_count GPU(s) are present:" >&2
    timeout 60 ctest --test-dir "$BUILD_DIR" -R "^${name}\$" -V 2>&1 | grep -m 3 'no GPU: skipping' >&2 || true
    echo "gpu-check: (CUDA could not use the GPU: a driver older than the CUDA 13 runtime, i.e. below 580," \
      "or CUDA_VISIBLE_DEVICES hiding it)" >&2
    failed=1
  fi
done <<<"$results"
echo "gpu-check: GPU training smoke run: $smoke_status"
echo "gpu-check: pretrained BART on the GPU: $bart_status"
[[ "$smoke_status" == OK* && "$bart_status" == OK* ]] || failed=1
if ((failed)); then die "see above, $test_log and $smoke_log"; fi
echo "gpu-check: OK (tests skipped here need more GPUs than this machine has: one per rank)"
