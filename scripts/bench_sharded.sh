#!/usr/bin/env bash
# CPU sharding benchmark: step time of the tiny pretraining config on 1 rank vs 2 ranks (torchrun,
# Gloo) for each strategy, with dist.prefetch off (synchronous collectives) and on (overlapped).
#   scripts/bench_sharded.sh [steps=20]
# Columns, averaged over the steps after 3 warm-up steps (rank 0's metrics.jsonl):
#   step ms      step_seconds
#   exposed ms   comm_seconds: the CPU blocked issuing or waiting for collectives
#   inflight ms  comm_inflight_seconds: time with at least one collective in flight, issue to
#                completion (Gloo marks completion on its own thread; overlaps counted once)
#   hidden %     1 - exposed / inflight: the share of communication time during which the CPU was
#                computing instead of waiting. Off, it is ~0 by construction (each collective is
#                waited on at once; what remains is issue overhead). The "exposed saved" line is
#                the other measure: exposed ms with prefetch off minus exposed ms with it on.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${AGENTTUNE_BUILD_DIR:-$ROOT/build}/agenttune"
STEPS="${1:-20}"
OUT="$(mktemp -d)"
export OMP_NUM_THREADS=1
"$BIN" prepare --config "$ROOT/configs/tiny/prepare.yaml" --no-progress \
  --set "corpora.0.output=$OUT/code" --set "corpora.1.output=$OUT/text" > /dev/null 2>&1
run() {  # name nproc strategy prefetch
  local cmd=("$BIN" train --config "$ROOT/configs/tiny/pretrain.yaml" --no-progress --set "output_dir=$OUT/$1"
    --set "train.max_steps=$STEPS" --set "checkpoint.interval=100000" --set "train.eval_interval=0"
    --set "dist.strategy=$3" --set "dist.prefetch=$4" --set "data.sources.0.path=$OUT/code"
    --set "data.sources.1.path=$OUT/text" --set "train.threads=1")
  if [[ "$2" == 1 ]]; then "${cmd[@]}" > "$OUT/$1.log" 2>&1
  else "$ROOT/.venv/bin/torchrun" --no-python --standalone --nproc-per-node "$2" "${cmd[@]}" > "$OUT/$1.log" 2>&1; fi
}
printf "%-14s %5s %8s %9s %11s %11s %9s\n" strategy ranks prefetch "step ms" "exposed ms" "inflight ms" "hidden %"
for s in full_shard shard_grad_op no_shard; do
  for n in 1 2; do
    for p in false true; do
      run "${s}_${n}_$p" "$n" "$s" "$p"
      python3 - "$OUT/${s}_${n}_$p/metrics.jsonl" "$s" "$n" "$p" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][3:]  # skip warm-up steps
mean = lambda k: sum(r[k] for r in rows) / len(rows)
step, comm, inflight = mean("step_seconds"), mean("comm_seconds"), mean("comm_inflight_seconds")
hidden = 100 * max(0.0, 1 - comm / inflight) if inflight > 0 else 0.0
print(f"{sys.argv[2]:<14} {sys.argv[3]:>5} {'on' if sys.argv[4] == 'true' else 'off':>8} {1e3*step:9.1f} "
      f"{1e3*comm:11.1f} {1e3*inflight:11.1f} {hidden:9.1f}")
PY
    done
  done
  python3 - "$OUT/${s}_2_false/metrics.jsonl" "$OUT/${s}_2_true/metrics.jsonl" "$s" <<'PY'
import json, sys
def mean(path, k):
    rows = [json.loads(l) for l in open(path)][3:]
    return sum(r[k] for r in rows) / len(rows)
off, on = sys.argv[1], sys.argv[2]
saved = mean(off, "comm_seconds") - mean(on, "comm_seconds")
print(f"{sys.argv[3]:<14}     2 exposed saved by prefetch: {1e3*saved:.1f} ms/step "
      f"({100*saved/mean(off, 'comm_seconds'):.0f} % of the exposed time off); step {1e3*mean(off, 'step_seconds'):.1f} -> "
      f"{1e3*mean(on, 'step_seconds'):.1f} ms")
PY
done
rm -rf "$OUT"
