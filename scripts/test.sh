#!/usr/bin/env bash
# Sets up if needed, builds, and runs the whole test suite with ctest (CPU only).
#   scripts/test.sh [extra ctest args, e.g. -R HfParity]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# --with-slurm: the Slurm test (ctest -L slurm) runs the batch script under its own slurmctld/slurmd.
"$ROOT/scripts/setup.sh" --with-slurm
cd "${AGENTTUNE_BUILD_DIR:-$ROOT/build}"
# Two ranks of LibTorch intra-op threads on two cores only fight; tests are small.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ctest --output-on-failure -j "$(nproc)" --timeout 600 "$@"
