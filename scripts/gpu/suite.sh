#!/usr/bin/env bash
# The GPU suite: what a lent GPU machine runs as one command, from the bundle (scripts/gpu/bundle.sh),
# each phase under its own time budget so the whole ends within 9 minutes; JSON under $OUT and a
# short table printed last. `--rehearse` runs every phase on the CPU with tiny shapes, from the same
# bundle with LD_LIBRARY_PATH = the bundle + torch's lib/ and nothing else (checked with ldd):
# ctest runs it (label gpu_rehearsal), so the suite cannot rot before a GPU is lent.
#
#   scripts/gpu/suite.sh [--rehearse] [--bundle DIR] [--python PY] [--only PHASE,PHASE...]
#   on the GPU machine (see docs/benchmarks.md):  OUT=$OUT scripts/gpu/suite.sh
#
# Phases: env (GPU, driver, torch, how the bundle resolves; when it cannot load, `fallback` builds
# the binaries there from the checkout and the bundle's .debs, which costs minutes and the compiled
# reference), correctness (forward and backward against transformers; a tiny run on the device:
# bf16, document attention, activation checkpointing, evaluation, checkpoints, SIGKILL + resume
# against an uninterrupted run through an explicitly named communicator (NCCL at world size 1),
# export verified by transformers, greedy generate against transformers'; host syncs per step by
# CUDA's sync debug mode; packed documents against each alone), per_unit (the ZeRO-3 path at world
# size 1 over NCCL against the resident path), offload (the full 32-layer Llama-2-7B with
# dist.offload: optimizer), recompute (one run per model.activation_checkpointing mode), adapters
# (full fine-tuning, LoRA and QLoRA at the 7B layer shape: tokens/s, MFU, peak against the plan), speed
# (bench_train_step, every row its own process run alone: our step, packed SFT and `agenttune
# train` against transformers eager at the 7B layer shape, and against torch.compile), io (writing and loading the 7B-shaped checkpoint, GB/s, beside the disk's read
# speed). Rows are sized from the device's free memory and `agenttune plan`: one that does not fit
# is skipped with its plan, never run into an OOM; one whose config key this build lacks is
# skipped as "not built". On the device a phase whose budget no longer fits the 540 s is skipped.
# The rehearsal also configures the fallback build from the .debs alone (no second build in CI).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REHEARSE=0
BUNDLE="$ROOT/gpu_bundle"
PY=""
ONLY=""  # --only env,offload: just those phases (a rerun of some rows); env always runs
while (($#)); do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --bundle) BUNDLE="$2"; shift ;;
    --python) PY="$2"; shift ;;
    --only) ONLY=",$2,"; shift ;;
    *) echo "suite: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-$ROOT/runs/gpu_suite}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# Scratch (the 13.5 GB checkpoint, a fallback build) stays out of $OUT: the device tool returns
# at most 8 files of 16 MiB from it, so $OUT gets phases.jsonl, table.txt and logs.tar.gz only.
WORK="${SUITE_WORK:-${TMPDIR:-/tmp}/agenttune_gpu_suite}"
LOGS="$WORK/logs"
rm -rf "$WORK" && mkdir -p "$WORK" "$LOGS"
# $OUT is the suite's own: empty, or an earlier run's output, which is replaced.
if [[ -n "$(ls -A "$OUT")" && ! -f "$OUT/phases.jsonl" ]]; then
  echo "suite: $OUT holds other files; give an empty folder or an earlier suite output" >&2; exit 2
fi
rm -rf "${OUT:?}"/*
RESULTS="$OUT/phases.jsonl"
: > "$RESULTS"
SUITE_START=$(date +%s)
SUITE_LIMIT_S=540  # 9 minutes: the device's command limit is 10, its start and the transfers need the rest

if [[ -z "$PY" ]]; then
  if ((REHEARSE)); then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi
TORCH_LIB="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
  echo "suite: $PY has no torch" >&2; exit 2; }
export LD_LIBRARY_PATH="$BUNDLE/lib:$TORCH_LIB"
BIN="$BUNDLE/bin/agenttune"
BENCH="$BUNDLE/bin/bench_train_step"
# The configs name ../shared/fixtures/llama2-tokenizer.model, which does not travel to the GPU
# machine: every command here takes the bundle's copy instead (SUITE_TOKENIZER overrides it).
TOKENIZER="${SUITE_TOKENIZER:-$BUNDLE/fixtures/llama2-tokenizer.model}"
[[ -f "$TOKENIZER" ]] || { echo "suite: no tokenizer at $TOKENIZER (remake the bundle, or set SUITE_TOKENIZER)" >&2; exit 2; }
if ((REHEARSE)); then DEV=cpu; DTYPE=bfloat16; else DEV=cuda; DTYPE=bfloat16; fi

# record NAME STATUS SECONDS JSON-FIGURES
record() {
  printf '{"phase": "%s", "status": "%s", "seconds": %s, "figures": %s}\n' "$1" "$2" "$3" "${4:-{\}}" >> "$RESULTS"
}

# phase NAME BUDGET_S FUNCTION: runs FUNCTION under `timeout`, its log in $LOGS/NAME.log; a phase
# prints its figures as one JSON object on its last line.
phase() {
  local name="$1" budget="$2" fn="$3" t0 rc figures
  [[ -z "$ONLY" || "$ONLY" == *",$name,"* || "$name" == env ]] || return 0
  t0=$(date +%s)
  # On the device the whole stays inside SUITE_LIMIT_S: a phase whose budget no longer fits is
  # skipped, never cut. (The rehearsal runs every phase; ctest's timeout bounds it.)
  if ((!REHEARSE && t0 - SUITE_START + budget > SUITE_LIMIT_S)); then
    local why="no time left: ${budget}s budget, $(( SUITE_LIMIT_S - (t0 - SUITE_START) ))s of ${SUITE_LIMIT_S}s left"
    echo "== $name: skipped, $why"
    skip "$name" "$why"
    return 4
  fi
  echo "== $name (budget ${budget}s)"
  timeout --kill-after=10 "$budget" bash -c "$(declare -f); $fn" > "$LOGS/$name.log" 2>&1
  rc=$?
  figures="$(tail -n 1 "$LOGS/$name.log")"
  [[ "$figures" == \{* ]] || figures='{}'
  local status=ok
  ((rc == 124 || rc == 137)) && status=timeout
  ((rc == 4)) && status=skipped  # the phase could not apply here and said why on its last line
  ((rc != 0 && rc != 4 && rc != 124 && rc != 137)) && status="failed($rc)"
  record "$name" "$status" "$(( $(date +%s) - t0 ))" "$figures"
  [[ "$status" == ok ]] || tail -n 20 "$LOGS/$name.log"
  archive_logs
  return "$rc"
}
# What comes back from the device: the logs and bench tables in one archive, under its limits;
# remade after every phase so that a command cut off at its limit still returns what ran.
archive_logs() {
  (cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs $(ls -d bench_*.txt isolation.json ours.json plan.txt bench_work/*.log \
    scale/*.plan scale/*/train.log scale/*/metrics.jsonl 2> /dev/null))
}
skip() {  # NAME WHY: a phase this run leaves out, in the table with its reason
  record "$1" skipped 0 "{\"why\": \"$2\"}"
}
export ROOT OUT WORK LOGS BIN BENCH PY DEV DTYPE REHEARSE TOKENIZER BUNDLE TORCH_LIB LD_LIBRARY_PATH

phase_env() {
  set -euo pipefail
  local gpu="none" driver="none"
  if command -v nvidia-smi > /dev/null; then
    gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
    driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
  fi
  local torch_version
  torch_version="$("$PY" -c 'import torch; print(torch.__version__)')"
  # Every library the bundle's binaries load must come from the bundle, torch's folder (and the
  # nvidia wheels beside it) or the C runtime.
  local outside=()
  for b in "$BUNDLE"/bin/*; do
    while read -r lib path; do
      [[ "$path" == "not" ]] && outside+=("$lib:not-found") && continue
      case "$path" in
        "$BUNDLE"/lib/*|"$TORCH_LIB"/*) ;;
        */libc.so*|*/libm.so*|*/libpthread.so*|*/libdl.so*|*/librt.so*|*/libutil.so*|*/ld-linux*|*/libstdc++.so*|*/libgcc_s.so*) ;;
        *) outside+=("$lib:$path") ;;
      esac
    done < <(ldd "$b" | awk '/=>/ {print $1, $3}')
  done
  echo "gpu: $gpu, driver $driver, torch $torch_version, bundle $(cat "$BUNDLE/manifest.json" | tr -d '\n ' | cut -c1-200)"
  if ((${#outside[@]})); then
    echo "libraries resolved from outside the bundle and torch: ${outside[*]}"
    echo "the bundle cannot be trusted here: building from the checkout and the bundle's .debs instead (minutes)"
    exit 3
  fi
  "$BIN" --version > /dev/null || { echo "the bundle's agenttune does not start here: building instead (minutes)"; exit 3; }
  printf '{"gpu": "%s", "driver": "%s", "torch": "%s", "outside_libraries": 0}\n' "$gpu" "$driver" "$torch_version"
}

# The fallback: the suite's binaries built on this machine from the checkout (carried as the
# working tree) and the bundle's .debs unpacked into a private prefix (never into /), then bundled
# like a build made here. `fallback_build configure` stops after CMake and checks that every
# package came from the prefix: the rehearsal's way of proving the .debs suffice without a second
# build in CI.
fallback_build() {
  set -euo pipefail
  local mode="${1:-build}" deps="$WORK/deps" build="$WORK/fallback_build"
  if ! ls "$BUNDLE"/debs/*.deb > /dev/null 2>&1; then
    echo '{"why": "the bundle has no .debs (apt-get download failed when it was made)"}'
    exit 4
  fi
  "$PY" "$ROOT/scripts/gpu/unpack_debs.py" "$deps" "$BUNDLE"/debs/*.deb
  local multiarch=x86_64-linux-gnu torch_prefix pkgconfig
  torch_prefix="$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
  pkgconfig="$deps/usr/bin/pkgconf"  # the device image may have none; the rehearsal uses the same
  export LD_LIBRARY_PATH="$deps/usr/lib/$multiarch:$deps/lib/$multiarch:$TORCH_LIB"
  # The .pc files say prefix=/usr; the sysroot puts the prefix in front of their -I and -L paths.
  export PKG_CONFIG_PATH="$deps/usr/lib/$multiarch/pkgconfig:$deps/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$deps" PKG_CONFIG_LIBDIR="$deps/usr/lib/$multiarch/pkgconfig"
  local t0=$SECONDS
  cmake -S "$ROOT" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DAGENTTUNE_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" -DPKG_CONFIG_EXECUTABLE="$pkgconfig"
  local configure_s=$((SECONDS - t0)) outside=()
  # Every dependency found must be the prefix's: a host copy here would hide a missing .deb.
  for key in yaml-cpp_DIR spdlog_DIR fmt_DIR CLI11_DIR nlohmann_json_DIR simdjson_DIR ZLIB_INCLUDE_DIR \
             ZLIB_LIBRARY_RELEASE SENTENCEPIECE_LIBDIR SENTENCEPIECE_INCLUDEDIR ZSTD_INCLUDEDIR; do
    local value
    value="$(grep -E "^$key:[A-Z]+=" "$build/CMakeCache.txt" | head -1 | cut -d= -f2- || true)"
    [[ "$value" == "$deps"* ]] || outside+=("$key=$value")
  done
  if ((${#outside[@]})); then
    echo "found outside the .debs' prefix: ${outside[*]}"
    exit 1
  fi
  if [[ "$mode" == configure ]]; then
    printf '{"debs": %s, "configure_s": %s, "packages_from_debs": true}\n' "$(ls "$BUNDLE"/debs/*.deb | wc -l)" "$configure_s"
    return
  fi
  ninja -C "$build" -j "$(nproc)" agenttune bench_train_step bench_document_isolation_check bench_device_parity_dump
  SUITE_TOKENIZER="$TOKENIZER" AGENTTUNE_BUNDLE_DEBS=0 "$ROOT/scripts/gpu/bundle.sh" "$build" "$WORK/fallback_bundle"
  printf '{"configure_s": %s, "build_s": %s}\n' "$configure_s" "$((SECONDS - t0 - configure_s))"
}

phase_correctness() {
  set -euo pipefail
  cd "$WORK"
  local common=(--set "model.init_from=$WORK/model" --set "data.sources.0.path=$WORK/prepared/code"
                --set "data.sources.1.path=$WORK/prepared/text" --set "dist.device=$DEV"
                --set "model.compute_dtype=$DTYPE" --set model.activation_checkpointing=full
                --set data.attention=document --set train.max_steps=24 --set train.eval_interval=8
                --set checkpoint.interval=8 --set "data.tokenizer=$TOKENIZER")
  "$BIN" init --config "$ROOT/configs/tiny/model.yaml" --out "$WORK/model" --set "tokenizer=$TOKENIZER"
  "$BIN" prepare --config "$ROOT/configs/tiny/prepare.yaml" --set "tokenizer=$TOKENIZER" \
    --set "corpora.0.output=$WORK/prepared/code" --set "corpora.1.output=$WORK/prepared/text"
  # The uninterrupted run through a communicator named explicitly (NCCL on the GPU, Gloo in the
  # rehearsal), which a world of one otherwise skips: its collectives run for real.
  local backend=gloo
  [[ "$DEV" == cuda ]] && backend=nccl
  "$BIN" train --config "$ROOT/configs/tiny/pretrain.yaml" --set "output_dir=$WORK/whole" "${common[@]}" \
    --set "dist.backend=$backend" 2>&1 | tee "$WORK/whole.log"
  grep -q "via $backend" "$WORK/whole.log" || { echo "the uninterrupted run did not use $backend" >&2; exit 1; }
  # Killed (SIGKILL) after its first checkpoint, then resumed.
  "$BIN" train --config "$ROOT/configs/tiny/pretrain.yaml" --set "output_dir=$WORK/killed" "${common[@]}" &
  local pid=$!
  while kill -0 "$pid" 2> /dev/null && ! ls "$WORK/killed/checkpoints"/step_* > /dev/null 2>&1; do sleep 0.2; done
  kill -9 "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  "$BIN" train --config "$ROOT/configs/tiny/pretrain.yaml" --set "output_dir=$WORK/killed" "${common[@]}" --resume auto
  "$BIN" export --checkpoint "$WORK/killed/checkpoints" --out "$WORK/exported" --dtype float32 \
    --verify transformers --python "$PY"
  "$BIN" generate --model "$WORK/exported" --prompt-ids 1,822,3017,29898,29876,1125 --max-new-tokens 16 \
    --device "$DEV" --json > "$WORK/ours.json"
  # Host syncs per step as CUDA's sync debug mode counts them (metrics.host_syncs). The rehearsal
  # runs this on the fake accelerator, which reports its syncs through the same CUDA switch.
  local sync_dev="$DEV" preload=()
  if ((REHEARSE)); then
    sync_dev=fake
    preload=(env "LD_PRELOAD=$BUNDLE/rehearsal/libagenttune_fake_device.so")
    [[ -f "$BUNDLE/rehearsal/libagenttune_fake_device.so" ]] || { echo "the bundle has no fake device (build the tests)" >&2; exit 1; }
  fi
  "${preload[@]}" "$BIN" train --config "$ROOT/configs/tiny/pretrain.yaml" --set "output_dir=$WORK/syncs" "${common[@]}" \
    --set "dist.device=$sync_dev" --set metrics.host_syncs=true --set train.max_steps=4 --set train.eval_interval=0 \
    --set checkpoint.interval=1000
  # Forward and backward against transformers on the same device, in the compute dtype.
  "$BUNDLE/bin/bench_device_parity_dump" --model "$WORK/exported" --out "$WORK/ours_grads.safetensors" \
    --device "$DEV" --dtype "$DTYPE"
  # Packed documents equal each document alone (CUDA bf16: through the varlen flash kernel).
  "$BUNDLE/bin/bench_document_isolation_check" --device "$DEV" > "$WORK/isolation.json" || true
  cat "$WORK/isolation.json"
  "$PY" - "$WORK" "$DEV" <<'PY'
import json, sys, torch
from transformers import LlamaForCausalLM
work, dev = sys.argv[1], sys.argv[2]
def last_loss(run):
    rows = [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl")]
    return [r for r in rows if "loss" in r][-1]["loss"]
whole, resumed = last_loss("whole"), last_loss("killed")
sync_rows = [json.loads(l) for l in open(f"{work}/syncs/metrics.jsonl")]
host_syncs = [r["host_syncs"] for r in sync_rows if "host_syncs" in r]
# agenttune's step reads the loss (and its verdict) once; anything more is a regression.
syncs_ok = len(host_syncs) == 4 and max(host_syncs) <= 1
# CPU: the same bits; CUDA: atomics in some backward kernels (embedding) are not deterministic.
tol = 0.0 if dev == "cpu" else 1e-2
resume_ok = abs(whole - resumed) <= tol * abs(whole)
ours = json.load(open(f"{work}/ours.json"))
model = LlamaForCausalLM.from_pretrained(f"{work}/exported", dtype=torch.float32).to(dev).eval()
ids = torch.tensor([ours["prompt_ids"]], device=dev)
ref = model.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=None)[0, ids.shape[1]:].tolist()
same = sum(1 for a, b in zip(ours["new_ids"], ref) if a == b)
generate_ok = ours["new_ids"] == ref[:len(ours["new_ids"])]
iso = json.load(open(f"{work}/isolation.json"))

# Forward and backward on this device against ours (bench_device_parity_dump), same dtype.
from safetensors.torch import load_file
mine = load_file(f"{work}/ours_grads.safetensors")
dtype = torch.bfloat16 if "bfloat16" == __import__("os").environ.get("DTYPE") else torch.float32
hf = LlamaForCausalLM.from_pretrained(f"{work}/exported", dtype=dtype).to(dev).train()
seq, V = mine["logits"].shape[1], hf.config.vocab_size
tokens = ((torch.arange(2 * seq) * 37 + 11) % V).view(2, seq)
tokens[:, 0] = 1
tokens = tokens.to(dev)
out = hf(input_ids=tokens).logits
loss = torch.nn.functional.cross_entropy(out[:, :-1].float().reshape(-1, V), tokens[:, 1:].reshape(-1), reduction="sum")
loss.backward()
scale = max(1.0, out.float().abs().max().item())
logit_diff = (out.detach().float().cpu() - mine["logits"]).abs().max().item() / scale
grad_diff = 0.0
for name, p in hf.named_parameters():
    g_ref, g = p.grad.float().cpu(), mine["grad." + name]
    grad_diff = max(grad_diff, ((g - g_ref).norm() / (g_ref.norm() + 1e-12)).item())
# bf16: both sides round activations to 8 mantissa bits in different places; fp32: kernel order only.
parity_tol = (3e-2, 5e-2) if dtype == torch.bfloat16 else (1e-4, 1e-4)
parity_ok = logit_diff <= parity_tol[0] and grad_diff <= parity_tol[1]
print(f"parity with transformers on {dev} ({dtype}): logits {logit_diff:.3g} of max|logit|, grads {grad_diff:.3g} relative")
print(f"final loss whole {whole:.6f} resumed {resumed:.6f}; generate {same}/{len(ref)} tokens equal to transformers")
print(f"host syncs per step (CUDA sync debug mode{', on the fake device' if dev == 'cpu' else ''}): {host_syncs}")
print(json.dumps({"host_syncs_per_step": max(host_syncs) if host_syncs else None, "host_syncs_ok": syncs_ok,
                  "parity_dtype": str(dtype), "parity_logits_rel": logit_diff, "parity_grads_rel": grad_diff,
                  "parity_ok": parity_ok, "isolation_path": iso["path"], "isolation_max_abs_diff": iso["max_abs_diff"],
                  "isolation_tolerance": iso["tolerance"], "isolation_ok": iso["ok"],"loss_whole": whole, "loss_resumed": resumed, "resume_tolerance": tol, "resume_ok": resume_ok,
                  "generate_equal_tokens": same, "generate_tokens": len(ref), "generate_ok": generate_ok,
                  "export_verified_by_transformers": True}))
sys.exit(0 if resume_ok and generate_ok and iso["ok"] and parity_ok and syncs_ok else 1)
PY
}

# ---- The scale rows (issue 24): training runs sized from the device's free memory and the plan ----
# Every row is `agenttune train` on the tiny pretraining config with model.shape, batch and sequence
# set, no evaluation, no checkpoint inside the steps (the run is killed once it has logged its last
# step, before the end-of-run save: a 7B's is 80 GB). A row whose plan does not fit 90 % of the
# free memory (the planner's own rule) is skipped with the figures that say why, never run into an
# OOM; a row whose config key this build does not accept yet is skipped as "not built".

# The tiny corpora as token shards for the scale rows (seconds; independent of the correctness phase).
scale_data() {
  local dir="$WORK/scale_data"
  mkdir -p "$WORK/scale"
  [[ -f "$dir/done" ]] && return
  "$BIN" prepare --config "$ROOT/configs/tiny/prepare.yaml" --set "tokenizer=$TOKENIZER" \
    --set "corpora.0.output=$dir/code" --set "corpora.1.output=$dir/text" > "$WORK/scale_prepare.log" 2>&1
  touch "$dir/done"
}

# shape_sets HIDDEN FFN LAYERS HEADS KV SEQ MICRO: SETS = the --set arguments of a run at that shape
# (one micro-batch per step) on this suite's device and dtype.
shape_sets() {
  local maxpos=$(( $6 > 2048 ? $6 : 2048 ))
  SETS=(--set "model.shape={vocab_size: 32000, hidden_size: $1, intermediate_size: $2, num_hidden_layers: $3, num_attention_heads: $4, num_key_value_heads: $5, max_position_embeddings: $maxpos}"
        --set "data.seq_len=$6" --set "train.micro_batch_size=$7" --set "train.global_batch_sequences=$7"
        --set "model.compute_dtype=$DTYPE" --set "dist.device=$DEV" --set train.eval_interval=0
        --set checkpoint.interval=1000000 --set metrics.tensorboard=false --set "data.tokenizer=$TOKENIZER"
        --set "data.sources.0.path=$WORK/scale_data/code" --set "data.sources.1.path=$WORK/scale_data/text")
}

# accepts KEY=VALUE: whether this build's config takes the setting (on top of SETS).
accepts() {
  "$BIN" plan --config "$ROOT/configs/tiny/pretrain.yaml" --gpus 1 ${SETS[@]+"${SETS[@]}"} --set "$1" > /dev/null \
    2> "$WORK/accepts.err"
}

# plan_gib [--set K=V ...]: the plan's per-GPU total in GiB at world size 1 (the `total` column of
# `agenttune plan`), its table into the log.
plan_gib() {
  "$BIN" plan --config "$ROOT/configs/tiny/pretrain.yaml" --gpus 1 "${SETS[@]}" "$@" > "$WORK/plan.txt"
  cat "$WORK/plan.txt" >&2
  plan_column total
}

# plan_column NAME: that column of the last plan (0 when the plan has no such column).
plan_column() {
  "$PY" - "$WORK/plan.txt" "$1" <<'PY'
import sys
header = None
for line in open(sys.argv[1]):
    cols = [c.strip() for c in line.strip().strip("|").split("|")]
    if header is None and "total" in cols:
        header = cols
    elif header and len(cols) == len(header) and cols[0] and not cols[0].startswith("-"):
        print(cols[header.index(sys.argv[2])] if sys.argv[2] in header else 0)
        break
else:
    sys.exit("no plan row with a total column")
PY
}

# free_gib: what a row may use: the device's free memory (the driver's figure), or on the CPU the
# host's available memory.
free_gib() {
  if [[ "$DEV" == cuda ]]; then
    nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits | head -1 | awk '{printf "%.2f\n", $1 / 1024}'
  else
    awk '/MemAvailable/ {printf "%.2f\n", $2 / 1048576}' /proc/meminfo
  fi
}

# fits PLAN_GIB: the planner's rule (total <= 90 % of the memory), against what is free now.
fits() {
  "$PY" -c "import sys; sys.exit(0 if float('$1') <= 0.9 * float('$(free_gib)') else 1)"
}

# logged_steps DIR: how many steps the run in DIR has logged so far.
logged_steps() {
  local n
  n="$(grep -c step_seconds "$1/metrics.jsonl" 2> /dev/null || true)"
  echo "${n:-0}"
}

# train_steps NAME STEPS [ARGS...]: `agenttune train` at SETS in $WORK/scale/NAME until it has
# logged STEPS steps, then SIGKILL (no end-of-run checkpoint). On CUDA the device's used memory is
# sampled meanwhile (the driver's view: context and cache included) into NAME/smi_peak_mib.
train_steps() {
  local name="$1" steps="$2"; shift 2
  local dir="$WORK/scale/$name" base=0 peak=0 used
  rm -rf "$dir" && mkdir -p "$dir"
  [[ "$DEV" == cuda ]] && base="$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)"
  env ${SCALE_PRELOAD:+"LD_PRELOAD=$SCALE_PRELOAD"} "$BIN" train --config "$ROOT/configs/tiny/pretrain.yaml" \
    --set "output_dir=$dir" "${SETS[@]}" --set "train.max_steps=$((steps + 1))" "$@" > "$dir/train.log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2> /dev/null; do
    if [[ "$DEV" == cuda ]]; then
      used="$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)"
      ((used - base > peak)) && peak=$((used - base))
    fi
    if (( $(logged_steps "$dir") >= steps )); then
      kill -9 "$pid" 2> /dev/null || true
      break
    fi
    sleep 0.2
  done
  local rc=0
  wait "$pid" 2> /dev/null || rc=$?
  echo "$peak" > "$dir/smi_peak_mib"
  echo "$steps" > "$dir/steps"  # a fast run may log one more before the kill: compared up to here
  if (( $(logged_steps "$dir") < steps )); then
    tail -n 30 "$dir/train.log" >&2
    echo "train $name ended (rc $rc) before logging $steps steps" >&2
    return 1
  fi
  tail -n 3 "$dir/train.log" >&2
}

# scale_runs_json: every scale run in $WORK/scale/* as figures (median step seconds after the first,
# tokens/s, MFU, losses, host syncs, the allocator's peak when train logs one), with the plans in
# $WORK/scale/*.plan, as JSON on stdout for the row's own checks.
scale_runs_json() {
  "$PY" - "$WORK/scale" <<'PY'
import json, os, statistics, sys
root, out = sys.argv[1], {}
for name in sorted(os.listdir(root)):
    d = os.path.join(root, name)
    f = os.path.join(d, "metrics.jsonl")
    if not os.path.exists(f):
        continue
    steps = int(open(os.path.join(d, "steps")).read())
    rows = [r for r in (json.loads(l) for l in open(f) if "step_seconds" in l) if r["step"] <= steps]
    timed = rows[1:] or rows
    peaks = [v for r in rows for k, v in r.items() if "peak" in k and k.endswith("bytes") and v is not None]
    r = {"losses": [x["loss"] for x in rows],
         "step_s": statistics.median(x["step_seconds"] for x in timed),
         "tokens_per_s": statistics.median(x["tokens_per_s"] for x in timed),
         "comm_s": statistics.median(x.get("comm_seconds", 0) for x in timed),
         "mfu": statistics.median(x["mfu"] for x in timed) if all(x.get("mfu") is not None for x in timed) else None,
         "host_syncs_max": max(x["host_syncs"] for x in rows) if all("host_syncs" in x for x in rows) else None,
         "peak_gib": max(peaks) / 2**30 if peaks else None,
         "smi_peak_gib": int(open(os.path.join(d, "smi_peak_mib")).read()) / 1024}
    p = d + ".plan"
    r["plan_gib"] = float(open(p).read()) if os.path.exists(p) else None
    out[name] = r
print(json.dumps(out))
PY
}

# skip_row WHY: this row cannot apply here; the phase's last line says why (status "skipped").
skip_row() {
  printf '{"why": "%s"}\n' "$1"
  exit 4
}

# no_fit WHY: the row's plan does not fit what is free. On the device a skip; in the rehearsal,
# whose tiny shapes always fit, a failure (the plan or the sizing is wrong).
no_fit() {
  ((REHEARSE)) && { echo "rehearsal: $1" >&2; exit 1; }
  skip_row "$1"
}

# plan_and_fit NAME [--set K=V...]: the plan for SETS plus the given settings, kept with the run;
# skips the row (exit 4) when it does not fit 90 % of the free memory.
plan_and_fit() {
  local name="$1"; shift
  local plan free
  plan="$(plan_gib "$@")" || { echo "$name: agenttune plan failed" >&2; exit 1; }
  free="$(free_gib)"
  echo "$name: plan $plan GiB per GPU, free $free GiB" >&2
  fits "$plan" || no_fit "$name: the plan needs $plan GiB, more than 90% of the $free GiB free"
  mkdir -p "$WORK/scale" && echo "$plan" > "$WORK/scale/$name.plan"
}

# not_built KEY=VALUE: skips the row when this build does not take the setting yet.
not_built() {
  accepts "$1" || skip_row "not built: this agenttune does not take $1 ($(head -c 160 "$WORK/accepts.err" | tr '\n\"\\' '   '))"
}

# The per-unit path at world size 1 (dist.single_rank_path: per_unit: gather, free and
# reduce-scatter per unit through the backend, NCCL on the GPU) against the resident path: losses
# equal (CPU: bit-identical; CUDA: within bf16's 1e-2, some backward kernels use atomics), host
# syncs per step <= 1 (CUDA's sync debug mode), the allocator's peak within 10 % of the plan.
phase_per_unit() {
  set -euo pipefail
  scale_data
  local backend=gloo steps=6 syncs=()
  if ((REHEARSE)); then
    shape_sets 128 352 2 4 4 128 2
  else
    shape_sets 2048 5632 22 32 4 2048 4  # TinyLlama-1.1B's shape
    backend=nccl steps=8 syncs=(--set metrics.host_syncs=true)
  fi
  not_built dist.single_rank_path=per_unit
  SETS+=(--set "dist.backend=$backend")
  plan_and_fit per_unit --set dist.single_rank_path=per_unit
  plan_and_fit resident --set dist.single_rank_path=resident
  train_steps resident "$steps" --set dist.single_rank_path=resident "${syncs[@]}"
  train_steps per_unit "$steps" --set dist.single_rank_path=per_unit "${syncs[@]}"
  grep -q "via $backend" "$WORK/scale/per_unit/train.log" || { echo "per_unit did not run through $backend" >&2; exit 1; }
  scale_runs_json | "$PY" -c '
import json, os, sys
runs = json.load(sys.stdin)
a, b = runs["resident"], runs["per_unit"]
cpu = os.environ["DEV"] == "cpu"
tol = 0.0 if cpu else 1e-2
loss_rel = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a["losses"], b["losses"]))
losses_ok = len(a["losses"]) == len(b["losses"]) and loss_rel <= tol
syncs = b["host_syncs_max"]
syncs_ok = cpu or (syncs is not None and syncs <= 1)
peak_vs_plan = b["peak_gib"] / b["plan_gib"] - 1 if b["peak_gib"] is not None else None
peak_ok = peak_vs_plan is None or abs(peak_vs_plan) <= 0.10
print("losses resident", a["losses"]); print("losses per_unit", b["losses"])
print(f"max relative difference {loss_rel:.3g} (tolerance {tol})")
print(json.dumps({"loss_max_rel_diff": loss_rel, "loss_tolerance": tol, "losses_ok": losses_ok,
                  "host_syncs_per_step": syncs if not cpu else "counted on CUDA only",
                  "step_s_resident": a["step_s"], "step_s_per_unit": b["step_s"],
                  "comm_s_resident": a["comm_s"], "comm_s_per_unit": b["comm_s"],
                  "plan_gib": b["plan_gib"], "peak_gib": b["peak_gib"] if b["peak_gib"] is not None else "train logs no allocator peak",
                  "device_used_gib": b["smi_peak_gib"] if not cpu else None,
                  "peak_vs_plan": peak_vs_plan, "peak_ok": peak_ok}))
sys.exit(0 if losses_ok and syncs_ok and peak_ok else 1)
'
}

# The full 32-layer Llama-2-7B shape on one GPU with dist.offload: optimizer (fp32 masters and
# AdamW state in host memory), the least recompute whose plan fits: tokens/s, MFU, peak vs plan.
# The rehearsal runs a tiny shape on the fake accelerator, offloaded and not: losses bit-identical.
phase_offload() {
  set -euo pipefail
  scale_data
  local steps=4 device=()
  if ((REHEARSE)); then
    [[ -f "$BUNDLE/rehearsal/libagenttune_fake_device.so" ]] || { echo "the bundle has no fake device (build the tests)" >&2; exit 1; }
    # Planned as the CPU (plan knows no fake device), run on the fake accelerator.
    export SCALE_PRELOAD="$BUNDLE/rehearsal/libagenttune_fake_device.so"
    shape_sets 128 352 2 4 4 128 2
    device=(--set dist.device=fake)
    steps=6
  else
    shape_sets 4096 11008 32 32 32 4096 1
  fi
  not_built dist.offload=optimizer
  local mode chosen="" plan none_plan
  none_plan="$(plan_gib --set dist.offload=none)" || none_plan=null
  for mode in none selective full; do  # least recompute first
    plan="$(plan_gib --set dist.offload=optimizer --set "model.activation_checkpointing=$mode")" || continue
    if fits "$plan"; then chosen="$mode"; break; fi
  done
  [[ -n "$chosen" ]] || no_fit "offload: no recompute mode plans within 90% of the $(free_gib) GiB free"
  # The offloaded masters, gradients and AdamW state live in pinned host memory: the host must
  # hold them too, and the process's own few GiB (libraries, data); there is no device context or
  # allocator fragmentation to keep 10 % for, so the margin is 6 GiB rather than 90 %.
  local host host_free
  host="$(plan_column host)"
  host_free="$(awk '/MemAvailable/ {printf "%.2f\n", $2 / 1048576}' /proc/meminfo)"
  echo "offload: the plan keeps $host GiB on the host, $host_free GiB available" >&2
  "$PY" -c "import sys; sys.exit(0 if float('$host') <= float('$host_free') - 6 else 1)" ||
    no_fit "offload: the plan keeps $host GiB on the host; $host_free GiB are available, less 6 GiB for the process"
  echo "$plan" > "$WORK/scale/offload.plan"
  SETS+=(--set "model.activation_checkpointing=$chosen")
  train_steps offload "$steps" --set dist.offload=optimizer "${device[@]}"
  ((REHEARSE)) && train_steps no_offload "$steps" --set dist.offload=none "${device[@]}"
  scale_runs_json | CHOSEN="$chosen" NONE_PLAN="$none_plan" "$PY" -c '
import json, os, sys
runs = json.load(sys.stdin)
o = runs["offload"]
peak_vs_plan = o["peak_gib"] / o["plan_gib"] - 1 if o["peak_gib"] is not None else None
ok = peak_vs_plan is None or abs(peak_vs_plan) <= 0.10
fig = {"recompute": os.environ["CHOSEN"], "plan_gib": o["plan_gib"], "plan_gib_without_offload": json.loads(os.environ["NONE_PLAN"]),
       "tokens_per_s": o["tokens_per_s"], "step_s": o["step_s"], "mfu": o["mfu"],
       "peak_gib": o["peak_gib"] if o["peak_gib"] is not None else "train logs no allocator peak",
       "device_used_gib": o["smi_peak_gib"] if os.environ["DEV"] == "cuda" else None,
       "peak_vs_plan": peak_vs_plan, "peak_ok": ok}
if "no_offload" in runs:  # the fake device: the same losses bit for bit
    fig["losses_bit_identical"] = runs["no_offload"]["losses"] == o["losses"]
    ok = ok and fig["losses_bit_identical"]
    print("losses offload", o["losses"]); print("losses none   ", runs["no_offload"]["losses"])
print(json.dumps(fig))
sys.exit(0 if ok else 1)
'
}

# rows_figures RUN=LABEL...: those scale runs' figures (scale_runs_json on stdin) under their labels:
# step time, tokens/s, plan, MFU (where train logs one), the allocator's peak against the plan
# (within 10 %, else the phase fails), the driver's used memory on CUDA; with RATIO_TO=RUN each
# one's tokens/s over that run's. LEFT_OUT: the rows whose plan did not fit, listed as such.
rows_figures() {
  "$PY" -c '
import json, os, sys
runs, fig, ok = json.load(sys.stdin), {}, True
base = runs.get(os.environ.get("RATIO_TO", ""))
for pair in sys.argv[1:]:
    name, label = pair.split("=")
    r = runs.get(name)
    if r is None:
        continue
    fig[f"{label}: step_s"] = r["step_s"]
    fig[f"{label}: tokens_per_s"] = r["tokens_per_s"]
    fig[f"{label}: plan_gib"] = r["plan_gib"]
    if r["mfu"] is not None:
        fig[f"{label}: mfu"] = r["mfu"]
    if r["peak_gib"] is not None:
        fig[f"{label}: peak_gib"] = r["peak_gib"]
        fig[f"{label}: peak_vs_plan"] = r["peak_gib"] / r["plan_gib"] - 1
        ok = ok and abs(fig[f"{label}: peak_vs_plan"]) <= 0.10
    if os.environ["DEV"] == "cuda":
        fig[f"{label}: device_used_gib"] = r["smi_peak_gib"]
    if base is not None and r is not base:
        fig[f"{label}: tokens_per_s_vs_base"] = r["tokens_per_s"] / base["tokens_per_s"]
if not any(r["peak_gib"] is not None for r in runs.values()):
    fig["peak"] = "train logs no allocator peak"
if os.environ.get("LEFT_OUT"):
    fig["left_out (plan over 90% of free)"] = os.environ["LEFT_OUT"]
print(json.dumps(fig))
sys.exit(0 if ok and fig else 1)
' "$@"
}

# One run per model.activation_checkpointing mode (none | selective | full) at the 7B layer shape
# with 8 layers: step time and the allocator's peak against the plan for each; a mode whose plan
# does not fit is left out with its plan.
phase_recompute() {
  set -euo pipefail
  scale_data
  local steps=6
  if ((REHEARSE)); then shape_sets 128 352 2 4 4 128 2; steps=5; else shape_sets 4096 11008 8 32 32 4096 1; fi
  not_built model.activation_checkpointing=selective
  local mode plan left_out=()
  for mode in none selective full; do
    plan="$(plan_gib --set "model.activation_checkpointing=$mode")" || { echo "plan failed for $mode" >&2; exit 1; }
    if ! fits "$plan"; then
      ((REHEARSE)) && { echo "rehearsal: recompute $mode plans $plan GiB, more than 90% free" >&2; exit 1; }
      left_out+=("$mode:${plan}GiB")
      continue
    fi
    echo "$plan" > "$WORK/scale/recompute_$mode.plan"
    train_steps "recompute_$mode" "$steps" --set "model.activation_checkpointing=$mode"
  done
  scale_runs_json | LEFT_OUT="${left_out[*]}" rows_figures recompute_none=none recompute_selective=selective \
    recompute_full=full
}

# Full fine-tuning, LoRA and QLoRA (model.adapter, rank 16, all seven projections) at the 7B layer
# shape with 8 layers, one `agenttune train` run each: tokens/s, MFU (the 6N convention for all
# three, as train logs it: a frozen base's weight gradients are counted though never computed),
# the allocator's peak (or the driver's used memory) against each one's plan. A kind whose plan does
# not fit is left out with its plan; the rehearsal runs the three at a tiny shape.
phase_adapters() {
  set -euo pipefail
  scale_data
  local steps=6
  if ((REHEARSE)); then shape_sets 128 352 2 4 4 128 2; steps=4; else shape_sets 4096 11008 8 32 32 4096 1; fi
  not_built model.adapter.kind=qlora
  local kind plan left_out=()
  for kind in none lora qlora; do
    local sets=(--set "model.adapter.kind=$kind")
    [[ "$kind" == none ]] || sets+=(--set model.adapter.rank=16 --set model.adapter.alpha=32)
    plan="$(plan_gib "${sets[@]}")" || { echo "plan failed for $kind" >&2; exit 1; }
    if ! fits "$plan"; then
      ((REHEARSE)) && { echo "rehearsal: adapter $kind plans $plan GiB, more than 90% free" >&2; exit 1; }
      left_out+=("$kind:${plan}GiB")
      continue
    fi
    echo "$plan" > "$WORK/scale/adapter_$kind.plan"
    train_steps "adapter_$kind" "$steps" "${sets[@]}"
  done
  scale_runs_json | LEFT_OUT="${left_out[*]}" RATIO_TO=adapter_none rows_figures adapter_none=full adapter_lora=lora \
    adapter_qlora=qlora
}

# layers_that_fit HIDDEN FFN HEADS KV SEQ MICRO MAX: the most layers (<= MAX) of that shape whose
# plan, with 15 % more for the reference (transformers keeps autocast copies and full logits),
# fits 90 % of the free memory; each process of the bench runs alone, so one side at a time.
layers_that_fit() {
  local one two free
  shape_sets "$1" "$2" 1 "$3" "$4" "$5" "$6"; one="$(plan_gib)"
  shape_sets "$1" "$2" 2 "$3" "$4" "$5" "$6"; two="$(plan_gib)"
  free="$(free_gib)"
  "$PY" -c "
one, two, free, cap = $one, $two, $free, $7
per = two - one
n = int((0.9 * free / 1.15 - (one - per)) // per)
print(max(0, min(cap, n)))"
}

# run_bench NAME ARGS...: one bench_train_step run, its table kept in $WORK/bench_NAME.txt. Every
# row is its own process, alone on the machine, alternating whole runs; the `agenttune train` row
# trains on the tiny corpora prepared by the bench in its work folder.
run_bench() {
  local name="$1"; shift
  "$BENCH" --python "$PY" --threads "$(nproc)" --agenttune "$BIN" --source "$ROOT" --tokenizer "$TOKENIZER" \
    --work "$WORK/bench_work" "$@" | tee "$WORK/bench_$name.txt"
}

# bench_figures NAME...: those runs' tokens/s, ratios and trainer-vs-step gaps as one JSON line
# (plus the matmul ceiling with --ceiling: this device's bf16 matmul throughput in this call, what
# MFU is also read against).
bench_figures() {
  "$PY" - "$WORK" "$DEV" "$@" <<'PY'
import json, re, sys, time
import torch
work, dev, names = sys.argv[1], sys.argv[2], sys.argv[3:]
out = {}
if names and names[0] == "--ceiling":
    names = names[1:]
    n = 8192 if dev == "cuda" else 1024
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=dev).to(dtype), torch.randn(n, n, device=dev).to(dtype)
    for _ in range(3): a @ b
    if dev == "cuda": torch.cuda.synchronize()
    t0 = time.perf_counter()
    reps = 20 if dev == "cuda" else 3
    for _ in range(reps): c = a @ b
    if dev == "cuda": torch.cuda.synchronize()
    out["matmul_ceiling_tflops"] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
for name in names:
    for line in open(f"{work}/bench_{name}.txt"):
        m = re.match(r"ratio (.*?): ([0-9.]+)", line)
        if m:
            out[f"{name}: ratio {m.group(1)}"] = float(m.group(2))
        m = re.match(r"trainer vs library step \((.*?)\): ([-+0-9.]+)%", line)
        if m:
            out[f"{name}: trainer vs step {m.group(1)}"] = float(m.group(2)) / 100
        m = re.match(r"shape: .*?(\d+) layers", line)
        if m:
            out[f"{name}: layers"] = int(m.group(1))
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) == 10 and (cols[0].startswith("agenttune") or cols[0].startswith("PyTorch")):
            try:
                out[f"{name}: {cols[0]} tokens/s"] = float(cols[3])
                if cols[5] != "-": out[f"{name}: {cols[0]} MFU"] = float(cols[5].rstrip("%")) / 100
                if cols[7] != "-": out[f"{name}: {cols[0]} peak GB"] = float(cols[7].split()[0]) / 1e3
            except ValueError:
                pass
print(json.dumps(out))
PY
}

# On the device each bench process runs alone, so a row needs only its own side's memory: the 7B
# layer shape gets as many layers (<= 12) as the plan fits in the free memory, with a margin for
# the reference. Rows: our step, packed SFT, `agenttune train` and the reference, 2 runs each.
phase_speed() {
  set -euo pipefail
  if ((REHEARSE)); then
    run_bench tiny --device cpu --dtype float32 --hidden 128 --ffn 352 --layers 2 --heads 4 --kv-heads 4 \
      --seq 128 --batch 2 --reps 2 --warmup 1 --steps 2 --strategies full_shard
    bench_figures --ceiling tiny
  else
    # The TinyLlama shape's training speed is the per_unit phase's (its resident run).
    local layers
    layers="$(layers_that_fit 4096 11008 32 32 4096 1 12)"
    echo "7B layer shape: $layers layers fit beside the free $(free_gib) GiB"
    ((layers >= 1)) || skip_row "speed: not one 7B layer plans within 90% of the $(free_gib) GiB free"
    run_bench llama7b_shape --device cuda --dtype bfloat16 --hidden 4096 --ffn 11008 --layers "$layers" --heads 32 \
      --kv-heads 32 --seq 4096 --batch 1 --reps 2 --warmup 2 --steps 4 --strategies full_shard
    bench_figures --ceiling llama7b_shape
  fi
}

# Against transformers under torch.compile (compiling happens in the reference's warm-up). At the
# 7B layer shape with 4 layers: inductor compiles the whole stack as one graph, and its compile
# time grows with the layers while the per-layer comparison does not change.
phase_speed_compiled() {
  set -euo pipefail
  if ((REHEARSE)); then
    run_bench tiny_compiled --device cpu --dtype float32 --hidden 128 --ffn 352 --layers 2 --heads 4 --kv-heads 4 \
      --seq 128 --batch 2 --reps 1 --warmup 1 --steps 2 --strategies full_shard --sft off --train off \
      --reference compiled
    bench_figures tiny_compiled
  else
    local layers
    layers="$(layers_that_fit 4096 11008 32 32 4096 1 4)"
    ((layers >= 1)) || skip_row "speed_compiled: not one 7B layer plans within 90% of the $(free_gib) GiB free"
    run_bench llama7b_shape_compiled --device cuda --dtype bfloat16 --hidden 4096 --ffn 11008 --layers "$layers" \
      --heads 32 --kv-heads 32 --seq 4096 --batch 1 --reps 2 --warmup 2 --steps 3 --strategies full_shard --sft off \
      --train off --reference compiled
    bench_figures llama7b_shape_compiled
  fi
}

# Writing (the safetensors writer export uses, timed inside `init`) and loading (`generate`'s load,
# timed inside it) the Llama-2-7B-shaped checkpoint in bf16 (13.5 GB), beside the disk's own read
# speed (O_DIRECT, past the page cache) and the page-cached read of the same files.
phase_io() {
  set -euo pipefail
  cd "$WORK"
  local shape
  if ((REHEARSE)); then
    shape='{vocab_size: 32000, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 4, dtype: bfloat16}'
  else
    shape='{vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, dtype: bfloat16}'
  fi
  "$BIN" init --config "$ROOT/configs/tiny/model.yaml" --out "$WORK/io_model" --set "tokenizer=$TOKENIZER" \
    --set "model=$shape" 2>&1 | tee "$WORK/io_init.log"
  "$BIN" generate --model "$WORK/io_model" --prompt-ids 1,2,3 --max-new-tokens 1 --device "$DEV" 2>&1 > /dev/null \
    | tee "$WORK/io_load.log"
  local first
  first="$(ls "$WORK"/io_model/*.safetensors | head -1)"
  # The disk: O_DIRECT bypasses the page cache the write just filled (some filesystems refuse it).
  dd if="$first" of=/dev/null bs=16M count=128 iflag=direct 2> "$WORK/io_dd.log" || echo "O_DIRECT refused" >> "$WORK/io_dd.log"
  cat "$WORK/io_dd.log"
  "$PY" - "$WORK" <<'PY'
import glob, json, re, sys, time
work = sys.argv[1]
files = sorted(glob.glob(f"{work}/io_model/*.safetensors"))
gb = sum(__import__("os").path.getsize(f) for f in files) / 1e9
write_s = float(re.search(r"writing ([0-9.]+)s", open(f"{work}/io_init.log").read()).group(1))
load_s = float(re.search(r"loaded .* in ([0-9.]+)s", open(f"{work}/io_load.log").read()).group(1))
dd = re.search(r"^(\d+) bytes .* copied, ([0-9.]+) s", open(f"{work}/io_dd.log").read(), re.M)
start, n = time.perf_counter(), 0
for f in files:
    with open(f, "rb") as fh:
        while chunk := fh.read(1 << 24):
            n += len(chunk)
cached = n / 1e9 / max(time.perf_counter() - start, 1e-9)
print(json.dumps({"checkpoint_gb": gb, "write_gb_s": gb / write_s, "load_gb_s": gb / load_s,
                  "disk_read_gb_s_direct": int(dd.group(1)) / 1e9 / float(dd.group(2)) if dd else None,
                  "read_gb_s_page_cached": cached}))
PY
}

if ((REHEARSE)); then
  phase env 60 phase_env
  phase fallback_configure 180 "fallback_build configure"
  phase correctness 300 phase_correctness
  phase per_unit 120 phase_per_unit
  phase offload 120 phase_offload
  phase recompute 120 phase_recompute
  phase adapters 120 phase_adapters
  phase speed 300 phase_speed
  phase speed_compiled 240 phase_speed_compiled
  phase io 120 phase_io
else
  # In order of what the suite is for; the budgets sum to the 540 s limit, and speed_compiled
  # runs only when the earlier phases left its 100 s (the guard in `phase`).
  if phase env 20 phase_env; then
    phase correctness 120 phase_correctness
    phase per_unit 60 phase_per_unit
    phase offload 120 phase_offload
    phase recompute 70 phase_recompute
    phase speed 100 phase_speed
    phase io 50 phase_io
    phase adapters 70 phase_adapters
    phase speed_compiled 100 phase_speed_compiled
  elif [[ "$(tail -n 1 "$RESULTS")" == *'"status": "failed(3)"'* ]]; then
    # The bundle cannot load here: build (minutes), then the phases that still fit in 9 minutes.
    echo "suite: the bundle does not load on this machine; building from the checkout (costs minutes of the budget)"
    if phase fallback 240 fallback_build; then
      BUNDLE="$WORK/fallback_bundle"
      export BUNDLE BIN="$BUNDLE/bin/agenttune" BENCH="$BUNDLE/bin/bench_train_step"
      export LD_LIBRARY_PATH="$BUNDLE/lib:$TORCH_LIB"
      phase correctness 120 phase_correctness
      phase per_unit 60 phase_per_unit
      phase offload 120 phase_offload
      skip recompute "the fallback build used its time"
      skip speed "the fallback build used its time"
      skip io "the fallback build used its time"
      skip adapters "the fallback build used its time"
      skip speed_compiled "the fallback build used its time"
    fi
  fi
fi
archive_logs
{
  echo
  echo "gpu suite ($( ((REHEARSE)) && echo "rehearsal on CPU" || echo "$DEV")), $(( $(date +%s) - SUITE_START )) s, $OUT/phases.jsonl"
  "$PY" - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"| {'phase':<18} | {'status':<10} | {'s':>5} | figures")
for r in rows:
    figs = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["figures"].items())
    print(f"| {r['phase']:<18} | {r['status']:<10} | {r['seconds']:>5} | {figs[:1500]}")
PY
} | tee "$OUT/table.txt"
"$PY" - "$RESULTS" "$OUT" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, files, bad = sys.argv[2], [], []
for root, dirs, names in os.walk(out):
    depth = os.path.relpath(root, out).count(os.sep) + (root != out)
    for n in names:
        files.append(os.path.join(root, n))
        if depth > 2 or os.path.getsize(files[-1]) > 16 << 20:
            bad.append(files[-1])
if len(files) > 8 or bad or sum(map(os.path.getsize, files)) > 64 << 20:
    print(f"suite: $OUT would not come back whole from the device (8 files, 16 MiB each, 2 folders down): "
          f"{len(files)} files, e.g. {(bad or files)[:5]}")
    sys.exit(1)
sys.exit(0 if all(r["status"] in ("ok", "skipped") for r in rows) else 1)
PY
