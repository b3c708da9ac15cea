#!/usr/bin/env bash
# SFT prepare throughput (read + render llama-2-chat + mask + write shards) against a Python
# script doing the same rendering with transformers' AutoTokenizer, on the same cores. Usage:
#   scripts/bench_sft.sh [--conversations 100000] [--threads N] [--transform]   (BUILD_DIR=build)
# The generated conversations are kept in $BENCH_DIR (default /tmp/agenttune_bench_sft) for reruns.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
model="${TOKENIZER:-$root/../shared/fixtures/llama2-tokenizer.model}"
[[ -f "$model" ]] || { echo "tokenizer not found: $model (set TOKENIZER=...)" >&2; exit 2; }
[[ -x "$root/.venv/bin/python" ]] || "$root/scripts/setup.sh"
[[ -f "$build/build.ninja" ]] || cmake -S "$root" -B "$build" -G Ninja >/dev/null
ninja -C "$build" bench_sft_throughput >/dev/null
"$build/bench/bench_sft_throughput" --tokenizer "$model" --dir "${BENCH_DIR:-/tmp/agenttune_bench_sft}" \
  --python "$root/.venv/bin/python" "$@"
