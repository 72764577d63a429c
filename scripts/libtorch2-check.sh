#!/usr/bin/env bash
# dgr against LibTorch 2.x (issue 22, Build 1): downloads PyPI's torch wheel (no dependencies), unpacks its
# LibTorch (torch/lib, torch/include), builds dgr and its tests against its CPU libraries
# (-DDGR_LIBTORCH_DIR: torch_cpu and c10; trainer/torch_compat.h holds the API differences) and runs the
# CPU test suite with them. The wheel's libtorch_cpu.so loads CUDA 13's libcudart and libcupti (its
# profiler), which /usr/local/cuda provides here; no GPU is used.
# Usage: scripts/libtorch2-check.sh [TORCH_VERSION]     (default: the newest torch on PyPI)
# Work directory: DGR_LIBTORCH2_DIR (default build-libtorch2/ in the checkout; the wheel is kept for reruns).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DGR_VENV:-/opt/dgr-venv}
work=${DGR_LIBTORCH2_DIR:-$PWD/build-libtorch2}
mkdir -p "$work/wheel"
if ! compgen -G "$work/wheel/torch-${1:-*}-*.whl" > /dev/null; then
  "$venv/bin/pip" download --no-deps --only-binary :all: -d "$work/wheel" "torch${1:+==$1}"
fi
wheel=$(ls "$work"/wheel/torch-${1:-*}-*.whl | sort -V | tail -n 1)
echo "libtorch2-check: $wheel"
marker=$work/libtorch/.unpacked-$(basename "$wheel")
if [[ ! -f $marker ]]; then  # unpacked once per wheel: fresh files would make every LibTorch file rebuild
  rm -rf "$work/libtorch" && mkdir -p "$work/libtorch"
  (cd "$work/libtorch" && python3 -m zipfile -e "$wheel" . > /dev/null)
  touch "$marker"
fi
cmake -S . -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDGR_BUILD_TESTS=ON \
      -DDGR_LIBTORCH_DIR="$work/libtorch/torch" -DDGR_WITH_NCCL=OFF
cmake --build "$work/build" -j"$(nproc)"
"$work/build/launcher/dgr" --version
ctest --test-dir "$work/build" -j"$(nproc)" --output-on-failure --timeout 900
