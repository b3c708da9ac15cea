#!/usr/bin/env bash
# One node, one process per GPU, through torchrun (from the project's .venv).
#
#   scripts/launch/torchrun_1node.sh NPROC --config configs/lemur/pretrain_7b.yaml [train args...]
#
# torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT for each rank; agenttune reads
# them (src/parallel/rendezvous.cpp) and every rank connects to torchrun's own TCP store.
# --standalone picks a free port, so two jobs on one machine do not collide.
# SIGTERM to torchrun reaches every rank; the trainer checkpoints and exits 143, so re-running
# with --resume auto (passed below) continues from there. torchrun SIGKILLs ranks still running
# 30 s after forwarding the signal, so a larger model's checkpoint may not finish.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
nproc="${1:?usage: $0 NPROC --config FILE [train args...]}"
shift
bin="${AGENTTUNE_BIN:-$here/build/agenttune}"
torchrun="${TORCHRUN:-$here/.venv/bin/torchrun}"

# Fail fast and loudly instead of hanging: the NCCL watchdog tears a rank down on a stuck
# collective (torchrun's own default is 1; 3 skips the cleanup that can itself hang).
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-3}"
# One OpenMP thread per rank unless told otherwise; data loading has its own threads.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

exec "$torchrun" --no-python --standalone --nnodes 1 --nproc-per-node "$nproc" \
  "$bin" train --resume auto "$@"
