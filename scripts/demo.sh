#!/usr/bin/env bash
# The main job on the bundled tiny default, end to end on a CPU in a couple of minutes:
#   1. init      a random tiny Llama-2-shaped model saved as a Hugging Face folder
#   2. prepare   the bundled code and text corpora -> token shards
#   3. train     continued pretraining on a 10:1 code:text mixture (the Lemur recipe), loss falling
#   4. export    the last checkpoint -> a Hugging Face folder (bf16)
#   5. generate  reload the exported model and decode with a KV cache
#   6. agent SFT AgentInstruct + ShareGPT samples -> AgentLM template with loss masks -> SFT shards,
#                the agent metrics of the pretrained model (agenttune eval), hybrid instruction tuning
#                from it, export, the same metrics after (the bundled trajectories' actions
#                reproduced) with one reply, and a chat reply shown with its control characters
#                visible and its token ids
# Builds only the agenttune binary (scripts/test.sh builds and runs the tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" --target agenttune
BIN="${AGENTTUNE_BUILD_DIR:-$ROOT/build}/agenttune"
OUT="$(mkdir -p "${1:-$ROOT/runs/demo}" && cd "${1:-$ROOT/runs/demo}" && pwd)"

echo "== 1. init: a random tiny model -> $OUT/model"
"$BIN" init --config "$ROOT/configs/tiny/model.yaml" --out "$OUT/model"
"$BIN" info --model "$OUT/model" --seq-len 128 | tail -3

echo "== 2. prepare: bundled corpora -> token shards"
"$BIN" prepare --config "$ROOT/configs/tiny/prepare.yaml" \
  --set "corpora.0.output=$OUT/prepared/code" --set "corpora.1.output=$OUT/prepared/text"

echo "== 3. train: continued pretraining, code:text = 10:1 by trained tokens"
"$BIN" train --config "$ROOT/configs/tiny/pretrain.yaml" --set "output_dir=$OUT/pretrain" \
  --set "model.init_from=$OUT/model" \
  --set "data.sources.0.path=$OUT/prepared/code" --set "data.sources.1.path=$OUT/prepared/text"
python3 - "$OUT/pretrain/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first, last = rows[0], rows[-1]
print(f"loss {first['loss']:.3f} (step {first['step']}) -> {last['loss']:.3f} (step {last['step']}); "
      f"code share {last['share/code']:.3f} (target {10/11:.3f})")
PY

echo "== 4. export: last checkpoint -> $OUT/exported (bf16 Hugging Face folder)"
"$BIN" export --checkpoint "$OUT/pretrain/checkpoints" --out "$OUT/exported" --dtype bfloat16

echo "== 5. generate: the trained model continues a prompt"
"$BIN" generate --model "$OUT/exported" --prompt "def fibonacci(n):" --max-new-tokens 24
echo "== 6. agent SFT: AgentInstruct + ShareGPT -> agentlm template -> masked shards -> tuning -> chat"
"$BIN" prepare --config "$ROOT/configs/tiny/sft_prepare.yaml" \
  --set "datasets.0.output=$OUT/sft_data/agentinstruct" --set "datasets.1.output=$OUT/sft_data/sharegpt"
echo "-- inspect: one rendered sample, trained tokens between ⟦ ⟧, and the counts per dataset"
"$BIN" inspect --config "$ROOT/configs/tiny/sft_prepare.yaml" --samples 1 --dataset sharegpt --plain
echo "-- eval before SFT: next action of every trained turn of the bundled trajectories (ShareGPT chats as negatives)"
"$BIN" eval --model "$OUT/exported" --config "$ROOT/configs/tiny/eval.yaml"
"$BIN" train --config "$ROOT/configs/tiny/sft.yaml" --set "output_dir=$OUT/sft" --set "model.init_from=$OUT/exported" \
  --set "data.sources.0.path=$OUT/sft_data/agentinstruct" --set "data.sources.1.path=$OUT/sft_data/sharegpt"
python3 - "$OUT/sft/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"SFT loss on assistant tokens {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}; "
      f"agent share of trained tokens {rows[-1]['share/agentinstruct']:.3f} "
      f"(eta = 0.2 of samples; agent trajectories train more tokens each)")
PY
"$BIN" export --checkpoint "$OUT/sft/checkpoints" --out "$OUT/agent" --dtype bfloat16 --template agentlm
echo "-- eval after SFT (the exported bf16 model), and its reply to the first turn: an OS action"
"$BIN" eval --model "$OUT/agent" --config "$ROOT/configs/tiny/eval.yaml" --show-replies 1
echo "== 7. chat reply of the tuned model (agentlm template), everything visible"
"$BIN" generate --model "$OUT/agent" --template agentlm --prompt "How many .log files are in /var/tmp?" \
  --max-new-tokens 24 --seed 0 --json > "$OUT/reply.json"
python3 - "$OUT/reply.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def visible(s):
    # Spaces as ·, newlines and tabs as \n \t, other control characters as escapes: a reply of
    # blanks or control bytes is then seen for what it is.
    out = []
    for c in s:
        if c == " ": out.append("·")
        elif c == "\n": out.append("\\n")
        elif c == "\t": out.append("\\t")
        elif not c.isprintable(): out.append(c.encode("unicode_escape").decode())
        else: out.append(c)
    return "".join(out)
print(f"prompt ({len(r['prompt_ids'])} ids, as the template renders it): {visible(r.get('prompt_text', ''))}")
print(f"reply  ({len(r['new_ids'])} ids{', ended at a stop id' if r['stopped'] else ''}): {visible(r.get('text', ''))}")
print(f"reply ids: {r['new_ids']}")
print("This tiny model (about 4M parameters, mostly its 32,000-row embedding and head) learnt the five bundled "
      "trajectories and chats by heart (the eval above) and nothing else: to a question it has not seen it "
      "replies with one of the answers it memorised. "
      "The demo shows the pipeline (data -> training -> eval -> export -> a model transformers and vLLM load), "
      "not a useful model; configs/agenttuning/ and configs/agentflan/ hold the papers' real runs.")
PY
echo "== demo done: metrics in $OUT/pretrain/metrics.jsonl and $OUT/sft/metrics.jsonl (TensorBoard: tensorboard --logdir $OUT)"
