#!/usr/bin/env bash
# CPU sharding benchmark: step time of the tiny pretraining config on 1 rank vs 2 ranks (torchrun,
# Gloo) for each strategy, with the time each step spends waiting in collectives. Collectives are
# synchronous today, so that time is communication NOT hidden behind compute.
#   scripts/bench_sharded.sh [steps=20]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${AGENTTUNE_BUILD_DIR:-$ROOT/build}/agenttune"
STEPS="${1:-20}"
OUT="$(mktemp -d)"
export OMP_NUM_THREADS=1
"$BIN" prepare --config "$ROOT/configs/tiny/prepare.yaml" --no-progress \
  --set "corpora.0.output=$OUT/code" --set "corpora.1.output=$OUT/text" > /dev/null 2>&1
run() {  # name nproc strategy
  local cmd=("$BIN" train --config "$ROOT/configs/tiny/pretrain.yaml" --no-progress --set "output_dir=$OUT/$1"
    --set "train.max_steps=$STEPS" --set "checkpoint.interval=100000" --set "train.eval_interval=0"
    --set "dist.strategy=$3" --set "data.sources.0.path=$OUT/code" --set "data.sources.1.path=$OUT/text"
    --set "train.threads=1")
  if [[ "$2" == 1 ]]; then "${cmd[@]}" > "$OUT/$1.log" 2>&1
  else "$ROOT/.venv/bin/torchrun" --no-python --standalone --nproc-per-node "$2" "${cmd[@]}" > "$OUT/$1.log" 2>&1; fi
}
printf "%-14s %5s %12s %12s %12s\n" strategy ranks "step ms" "comm ms" "exposed %"
for s in full_shard shard_grad_op no_shard; do
  for n in 1 2; do
    run "${s}_$n" "$n" "$s"
    python3 - "$OUT/${s}_$n/metrics.jsonl" "$s" "$n" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][3:]  # skip warm-up steps
step = sum(r["step_seconds"] for r in rows) / len(rows)
comm = sum(r["comm_seconds"] for r in rows) / len(rows)
print(f"{sys.argv[2]:<14} {sys.argv[3]:>5} {1e3*step:12.1f} {1e3*comm:12.1f} {100*comm/step:12.1f}")
PY
  done
done
rm -rf "$OUT"
