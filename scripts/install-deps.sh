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
  libsentencepiece-dev sentencepiece libsdsl-dev libxapian-dev nlohmann-json3-dev libpcre2-dev libicu-dev
  zlib1g-dev libssl-dev
  apt-utils
  gnuplot-nox
)
if [[ "${1:-}" == "--with-slurm" ]]; then
  packages+=(slurmd slurmctld slurm-client munge iproute2 util-linux)
fi
# Side-by-side references (benchmarks and checks only; dgr itself never needs them).
packages+=(python3-torch python3-h5py python3-numpy python3-scipy python3-venv python3-dev)
# Reference implementations from PyPI, in a virtual environment of Debian's python3 (tests that need them
# skip, exit 77, without it): module pytrec_eval is trec_eval's own code (tests/evaluate_trec_eval_test.sh),
# from the pytrec-eval-terrier distribution, which ships wheels (the original pytrec_eval sdist downloads
# trec_eval from GitHub while it builds); transformers and tokenizers are the references of BART's tokenizer
# (tests/bart_bpe_test.sh), pinned to the 4.x line whose BartTokenizer is still GPT-2's Python algorithm beside
# the Rust BartTokenizerFast (in 5.x both are the Rust one); safetensors is the reference of data/safetensors.h
# (tests/safetensors_test.sh). Each entry: "module=distribution".
venv="${DGR_VENV:-/opt/dgr-venv}"
python_packages=(pytrec_eval=pytrec-eval-terrier transformers=transformers==4.46.3 tokenizers=tokenizers==0.20.3 safetensors=safetensors==0.4.5)

# Creates $venv and pip-installs the missing python_packages there (needs python3-venv and the network).
install_venv() {
  if [[ ! -x "$venv/bin/python" ]] && ! /usr/bin/python3 -m venv "$venv"; then
    echo "install-deps: '/usr/bin/python3 -m venv $venv' failed (is python3-venv installed?)" >&2
    return 1
  fi
  local wanted=()
  for p in "${python_packages[@]}"; do
    local module=${p%%=*} dist=${p#*=}
    if [[ $dist == *==* ]]; then  # pinned: the installed version must be that one
      "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version(\"${dist%%==*}\") != \"${dist#*==}\")" \
        2>/dev/null || wanted+=("$dist")
    else
      "$venv/bin/python" -c "import $module" 2>/dev/null || wanted+=("$dist")
    fi
  done
  [[ ${#wanted[@]} -eq 0 ]] && return 0
  echo "install-deps: pip-installing ${wanted[*]} into $venv"
  if ! "$venv/bin/pip" install -q "${wanted[@]}" >/tmp/dgr-install-venv.log 2>&1; then
    tail -n 20 /tmp/dgr-install-venv.log >&2
    echo "install-deps: pip install into $venv failed (full log: /tmp/dgr-install-venv.log; needs PyPI)" >&2
    return 1
  fi
}

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
  install_venv || echo "install-deps: warning: no $venv; the tests that need it report skipped" >&2
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
install_venv || echo "install-deps: warning: no $venv; the tests that need it report skipped" >&2
echo "install-deps: done"
