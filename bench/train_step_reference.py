"""The PyTorch reference for bench_train_step: transformers' LlamaForCausalLM (SDPA attention) and
torch.optim.AdamW(fused=True), the step a careful PyTorch user writes (forward with labels,
backward, clip_grad_norm_ to 1.0, AdamW, zero_grad(set_to_none)).

A worker: bench_train_step starts it once and alternates with its own runs. It prints "ready"
after building the model and one warm-up step, then answers each "run N" line on stdin with one
JSON line {"ms_per_step", "loss", "peak_bytes", "peak_rss_bytes"} for N timed steps.

usage: train_step_reference.py --hidden H --ffn F --layers L --heads A --kv-heads K --vocab V
                               --seq T --batch B --threads N --device cpu|cuda --dtype float32|bfloat16
                               [--compile]
--compile: the model under torch.compile (default mode), compiled during the warm-up step.
Tokens are (arange(B*T) * 7919 + 13) % V, as in bench_train_step, so both train on the same ids.
"""
import argparse
import contextlib
import json
import resource
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    p = argparse.ArgumentParser()
    for k in ("hidden", "ffn", "layers", "heads", "kv-heads", "vocab", "seq", "batch", "threads"):
        p.add_argument("--" + k, type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cfg = LlamaConfig(hidden_size=a.hidden, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab,
                      max_position_embeddings=max(a.seq, 2048), rms_norm_eps=1e-5, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    with dev:  # built on the device: initialising billions of parameters on the host takes minutes
        model = LlamaForCausalLM(cfg).train()  # fp32 master weights, as agenttune's
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                            fused=True)
    ids = ((torch.arange(a.batch * a.seq) * 7919 + 13) % a.vocab).view(a.batch, a.seq).to(dev)
    # Mixed precision as a PyTorch user does it: autocast over fp32 weights.
    amp = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if a.dtype == "bfloat16"
           else contextlib.nullcontext())

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    forward = torch.compile(model) if a.compile else model

    def step():
        with amp:
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    step()
    sync()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] != "run":
            print(json.dumps({"error": f"unknown command {line.strip()!r}"}), flush=True)
            continue
        n = int(words[1])
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            loss = step()
        last = loss.item()  # one sync at the end, as the C++ side reads its loss once per step
        sync()
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"ms_per_step": dt * 1000 / n, "loss": last, "peak_bytes": peak, "peak_rss_bytes": rss}),
              flush=True)


if __name__ == "__main__":
    main()
