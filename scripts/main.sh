#!/usr/bin/env bash
# The README's main command: installs the dependencies, builds dgr and runs the main job on the embedded
# default data. Today the main job builds the Debian package retrieval data set from this machine's apt
# lists, prints its report, validates it and runs the BM25 baseline on dev and test with its metrics; the
# pipeline stages (index, stage 1, mining, teacher, distillation) are added to this script as they land.
# Usage: scripts/main.sh [--subset tiny|small|full]
set -euo pipefail
cd "$(dirname "$0")/.."
subset=tiny
while [[ $# -gt 0 ]]; do
  case "$1" in
    --subset) subset="$2"; shift 2 ;;
    --subset=*) subset="${1#*=}"; shift ;;
    *) echo "main.sh: unknown argument '$1' (usage: scripts/main.sh [--subset tiny|small|full])" >&2; exit 2 ;;
  esac
done
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target dgr
build/launcher/dgr data build-debian --subset "$subset" --out "data/debian-$subset" --force
build/launcher/dgr data check --data "data/debian-$subset"
build/launcher/dgr bm25 --data "data/debian-$subset" --split dev --split test
