#!/usr/bin/env bash
# Installs every Debian package dgr needs to build, test and run, idempotently.
# Usage: scripts/install-deps.sh [--with-slurm]   (run as root on Debian 12)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev libopenblas0-openmp
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libcli11-dev libtomlplusplus-dev
  libsentencepiece-dev sentencepiece libsdsl-dev libxapian-dev nlohmann-json3-dev
  zlib1g-dev libssl-dev
  apt-utils
  gnuplot-nox
)
if [[ "${1:-}" == "--with-slurm" ]]; then
  packages+=(slurmd slurmctld slurm-client munge iproute2 util-linux)
fi
# Side-by-side references (benchmarks and checks only; dgr itself never needs them).
packages+=(python3-torch python3-h5py python3-numpy python3-scipy)

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: must run as root (apt-get install); try: sudo $0 $*" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install-deps: apt-get not found: dgr's install step supports Debian 12 (bookworm) only" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
  echo "install-deps: 'apt-get update' failed: check the network and /etc/apt/sources.list" >&2
  exit 1
fi
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/dgr-install-deps.log 2>&1; then
  tail -n 20 /tmp/dgr-install-deps.log >&2
  for p in "${missing[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
      echo "install-deps: package '$p' is not available from the configured Debian sources" >&2
    fi
  done
  echo "install-deps: apt-get install failed (full log: /tmp/dgr-install-deps.log)" >&2
  exit 1
fi
echo "install-deps: done"
