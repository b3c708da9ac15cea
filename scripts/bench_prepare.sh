#!/usr/bin/env bash
# Throughput of `prepare` against a Python sentencepiece script and the raw encoder, plus the
# JSON parser measurement that chose simdjson. Usage:
#   scripts/bench_prepare.sh [--mb 200] [--threads N]     (BUILD_DIR=build by default)
# The generated corpus is kept in $BENCH_DIR (default /tmp/agenttune_bench_prepare) for reruns.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
model="${TOKENIZER:-$root/../shared/fixtures/llama2-tokenizer.model}"
[[ -f "$model" ]] || { echo "tokenizer not found: $model (set TOKENIZER=...)" >&2; exit 2; }
[[ -x "$root/.venv/bin/python" ]] || "$root/scripts/setup.sh"
[[ -f "$build/build.ninja" ]] || cmake -S "$root" -B "$build" -G Ninja >/dev/null
ninja -C "$build" bench_json_parse bench_prepare_throughput >/dev/null
echo "== JSON: one JSONL record -> its text field (single thread)"
"$build/bench/bench_json_parse" 64
echo
echo "== prepare throughput"
"$build/bench/bench_prepare_throughput" --tokenizer "$model" --dir "${BENCH_DIR:-/tmp/agenttune_bench_prepare}" \
  --python "$root/.venv/bin/python" "$@"
