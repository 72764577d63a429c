#!/usr/bin/env bash
# Every collective goes through comm/ (with its deadline and its report of the ranks that did not arrive):
# fails when a C/C++ file outside comm/, common/world.*, common/error.* and the launcher's MPI start-up
# (launcher/startup.*, launcher/version.cpp) names an MPI function, type or handle (MPI_Xxx, PMPI_Xxx,
# MPI_COMM_WORLD) or includes <mpi.h> outside a // comment. bench/ and tests/ may use MPI directly.
# Usage: no_raw_mpi_test.sh SOURCE_DIR
set -euo pipefail
root=${1:?usage: no_raw_mpi_test.sh SOURCE_DIR}
cd "$root"
allowed='^(comm/|bench/|tests/|common/world\.(h|cpp)$|common/error\.(h|cpp)$|launcher/startup\.(h|cpp)$|launcher/version\.cpp$)'
pattern='\bP?MPI_[A-Za-z]|#[[:space:]]*include[[:space:]]*<mpi\.h>'

mapfile -t files < <(git ls-files '*.cpp' '*.h' '*.hpp' '*.cc' '*.cu' '*.cuh' 2>/dev/null || true)
if [ "${#files[@]}" -eq 0 ]; then  # not a git checkout (e.g. an unpacked tarball): every source file
  mapfile -t files < <(find . -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.cc' -o -name '*.cu' -o -name '*.cuh' \) \
                         -not -path './build*' | sed 's|^\./||' | sort)
fi

# The pattern must find what it is meant to find, or this test could never fail.
# (grep without -q: with -q it can exit before sed has written everything, and under pipefail sed's SIGPIPE
# made this check fail now and then, in 0.01 s.)
if ! sed 's://.*$::' comm/mpi_base.cpp | grep -E "$pattern" > /dev/null; then
  echo "no_raw_mpi_test: the pattern finds no MPI call in comm/mpi_base.cpp: the test itself is broken" >&2
  exit 2
fi

checked=0
found=0
for f in "${files[@]}"; do
  [[ "$f" =~ $allowed ]] && continue
  checked=$((checked + 1))
  hits=$(sed 's://.*$::' "$f" | grep -nE "$pattern" || true)
  if [ -n "$hits" ]; then
    found=1
    while IFS= read -r line; do echo "$f:$line"; done <<< "$hits"
  fi
done
if [ "$checked" -lt 20 ]; then
  echo "no_raw_mpi_test: only $checked files checked under $root: is SOURCE_DIR the repository root?" >&2
  exit 2
fi
if [ "$found" -ne 0 ]; then
  echo "no_raw_mpi_test: the lines above use MPI directly. Send collectives through a comm::Communicator" \
       "(control traffic: comm::make_host_communicator(world) -> gather_bytes, broadcast_bytes, allgather, barrier)," \
       "so that they have a deadline and a timeout names the ranks that did not arrive." >&2
  exit 1
fi
echo "no_raw_mpi_test: $checked files outside comm/ and MPI start-up use no MPI directly"
