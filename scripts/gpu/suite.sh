#!/usr/bin/env bash
# The GPU suite: what a lent GPU machine runs as one command, from the bundle (scripts/gpu/bundle.sh),
# each phase under its own time budget so the whole ends within 9 minutes; JSON under $OUT and a
# short table printed last. `--rehearse` runs every phase on the CPU with tiny shapes, from the same
# bundle with LD_LIBRARY_PATH = the bundle + torch's lib/ and nothing else (checked with ldd):
# ctest runs it (label gpu_rehearsal), so the suite cannot rot before a GPU is lent.
#
#   scripts/gpu/suite.sh [--rehearse] [--bundle DIR] [--python PY]
#   on the GPU machine (see docs/benchmarks.md):  OUT=$OUT scripts/gpu/suite.sh
#
# Phases: env (GPU, driver, torch, how the bundle resolves; when it cannot load, `fallback` builds
# the binaries there from the checkout and the bundle's .debs, which costs minutes and the compiled
# reference), correctness (forward and backward against transformers; a tiny run on the device:
# bf16, document attention, activation checkpointing, evaluation, checkpoints, SIGKILL + resume
# against an uninterrupted run through an explicitly named communicator (NCCL at world size 1),
# export verified by transformers, greedy generate against transformers'; host syncs per step by
# CUDA's sync debug mode; packed documents against each alone), speed (bench_train_step against
# transformers eager at the 7B and TinyLlama shapes with packed SFT, and against torch.compile),
# io (writing and loading the 7B-shaped checkpoint, GB/s, beside the disk's read speed).
# The rehearsal also configures the fallback build from the .debs alone (no second build in CI).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REHEARSE=0
BUNDLE="$ROOT/gpu_bundle"
PY=""
while (($#)); do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --bundle) BUNDLE="$2"; shift ;;
    --python) PY="$2"; shift ;;
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
  t0=$(date +%s)
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
  (cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs $(ls bench_*.txt isolation.json ours.json 2> /dev/null))
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
                --set "model.compute_dtype=$DTYPE" --set model.activation_checkpointing=true
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

# run_bench NAME ARGS...: one bench_train_step run, its table kept in $WORK/bench_NAME.txt.
run_bench() {
  local name="$1"; shift
  "$BENCH" --python "$PY" --threads "$(nproc)" "$@" | tee "$WORK/bench_$name.txt"
}

# bench_figures NAME...: those runs' tokens/s and ratios as one JSON line (plus the matmul ceiling
# with --ceiling: this device's bf16 matmul throughput in this call, what MFU is also read against).
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
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) == 8 and (cols[0].startswith("agenttune") or cols[0].startswith("PyTorch")):
            try:
                out[f"{name}: {cols[0]} tokens/s"] = float(cols[2])
                if cols[4] != "-": out[f"{name}: {cols[0]} MFU"] = float(cols[4].rstrip("%")) / 100
                if cols[6] != "-": out[f"{name}: {cols[0]} peak GB"] = float(cols[6].split()[0]) / 1e3
            except ValueError:
                pass
print(json.dumps(out))
PY
}

phase_speed() {
  set -euo pipefail
  if ((REHEARSE)); then
    run_bench tiny --device cpu --dtype float32 --hidden 128 --ffn 352 --layers 2 --heads 4 --kv-heads 4 \
      --seq 128 --batch 2 --reps 2 --steps 1 --strategies full_shard
    bench_figures --ceiling tiny
  else
    # Both sides hold fp32 masters + AdamW (16 B/parameter) at once: 12 of the 7B's 32 layers fit
    # beside the reference on one 141 GB GPU. Each run also has packed SFT under document isolation.
    run_bench llama7b_shape --device cuda --dtype bfloat16 --hidden 4096 --ffn 11008 --layers 12 --heads 32 \
      --kv-heads 32 --seq 4096 --batch 1 --reps 3 --steps 3 --strategies full_shard
    run_bench tinyllama_shape --device cuda --dtype bfloat16 --hidden 2048 --ffn 5632 --layers 22 --heads 32 \
      --kv-heads 4 --seq 2048 --batch 4 --reps 3 --steps 3 --strategies full_shard
    bench_figures --ceiling llama7b_shape tinyllama_shape
  fi
}

# Against transformers under torch.compile (compiling happens in the reference's warm-up). At the
# 7B layer shape with 4 layers: inductor compiles the whole stack as one graph, and its compile
# time grows with the layers while the per-layer comparison does not change.
phase_speed_compiled() {
  set -euo pipefail
  if ((REHEARSE)); then
    run_bench tiny_compiled --device cpu --dtype float32 --hidden 128 --ffn 352 --layers 2 --heads 4 --kv-heads 4 \
      --seq 128 --batch 2 --reps 2 --steps 1 --strategies full_shard --sft off --reference compiled
    bench_figures tiny_compiled
  else
    run_bench llama7b_shape_compiled --device cuda --dtype bfloat16 --hidden 4096 --ffn 11008 --layers 4 \
      --heads 32 --kv-heads 32 --seq 4096 --batch 1 --reps 3 --steps 3 --strategies full_shard --sft off \
      --reference compiled
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
  phase speed 300 phase_speed
  phase speed_compiled 240 phase_speed_compiled
  phase io 120 phase_io
else
  # 30 + 150 + 150 + 100 + 100 s: the whole within 9 minutes.
  if phase env 30 phase_env; then
    phase correctness 150 phase_correctness
    phase speed 150 phase_speed
    phase speed_compiled 100 phase_speed_compiled
    phase io 100 phase_io
  elif [[ "$(tail -n 1 "$RESULTS")" == *'"status": "failed(3)"'* ]]; then
    # The bundle cannot load here: build (minutes), then the phases that still fit in 9 minutes.
    echo "suite: the bundle does not load on this machine; building from the checkout (costs minutes of the budget)"
    if phase fallback 240 fallback_build; then
      BUNDLE="$WORK/fallback_bundle"
      export BUNDLE BIN="$BUNDLE/bin/agenttune" BENCH="$BUNDLE/bin/bench_train_step"
      export LD_LIBRARY_PATH="$BUNDLE/lib:$TORCH_LIB"
      phase correctness 150 phase_correctness
      phase speed 150 phase_speed
      skip speed_compiled "the fallback build used its time"
      skip io "the fallback build used its time"
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
