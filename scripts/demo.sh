#!/usr/bin/env bash
# The main job on the bundled tiny default: create a tiny Llama-2-shaped model, save it as a
# Hugging Face folder, reload it, and generate a few tokens with the real Llama-2 tokenizer.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
BIN="${AGENTTUNE_BUILD_DIR:-$ROOT/build}/agenttune"
OUT="${1:-$ROOT/runs/demo}"
mkdir -p "$OUT"

echo "== 1. init: a random tiny model -> $OUT/model"
"$BIN" init --config "$ROOT/configs/tiny/model.yaml" --out "$OUT/model"
ls -l "$OUT/model"

echo "== 2. info: shape, parameters, FLOPs per token"
"$BIN" info --model "$OUT/model" --seq-len 512 | tail -4

echo "== 3. generate: reload and decode (greedy, then sampled) with a KV cache"
"$BIN" generate --model "$OUT/model" --prompt "def fibonacci(n):" --max-new-tokens 16
"$BIN" generate --model "$OUT/model" --prompt "The agent calls a tool" --max-new-tokens 16 \
  --temperature 0.8 --top-p 0.9 --seed 1
echo "== demo done (an untrained model speaks noise; later stages train it)"
