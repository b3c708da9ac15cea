"""The PyTorch reference for bench_train_step, as a standalone loop: transformers' LlamaForCausalLM
(SDPA attention) and torch.optim.AdamW(fused=True), the step a careful PyTorch user writes (forward
with labels, backward, clip_grad_norm_ to 1.0, AdamW, zero_grad(set_to_none)).

One process per run, alone on the machine: bench_train_step starts it, waits for it, and starts the
next row only after it has exited. It builds the model, runs --warmup steps, then --steps timed
steps (each drained on CUDA), and prints one JSON line {"step_ms": [...], "loss", "peak_bytes",
"threads", "omp_wait_policy"}; torch's parallel settings go to stderr first. Runs on its own too:

usage: train_step_reference.py --hidden H --ffn F --layers L --heads A --kv-heads K --vocab V
                               --seq T --batch B --threads N --device cpu|cuda --dtype float32|bfloat16
                               [--warmup 2] [--steps 5] [--compile] [--adapter none|lora|qlora]
                               [--rank 16] [--alpha 32]
--compile: the model under torch.compile (default mode), compiled during the warm-up steps.
--adapter lora: PEFT's get_peft_model with LoraConfig(r=--rank, lora_alpha=--alpha, lora_dropout=0,
all seven projections) on that model, as a PEFT user trains: the base frozen, the fused AdamW and the
clip over the adapters alone. --adapter qlora: the same on the model reloaded by transformers with
bitsandbytes' 4-bit NF4 (double-quantised absmax, compute dtype --dtype), the QLoRA recipe's
BitsAndBytesConfig (saved to and loaded from a temporary folder: bitsandbytes quantises at load).
Tokens are (arange(B*T) * 7919 + 13) % V, as in bench_train_step, so both train on the same ids.
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def with_adapter(model, a, dev):
    """The model as a PEFT user trains it: LoRA on all seven projections (QLoRA: over the 4-bit base)."""
    from peft import LoraConfig, get_peft_model
    if a.adapter == "qlora":
        from transformers import BitsAndBytesConfig
        compute = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            model = LlamaForCausalLM.from_pretrained(d, quantization_config=q, dtype=torch.float32,
                                                     attn_implementation="sdpa", device_map=dev.type)
    lora = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=TARGETS)
    return get_peft_model(model, lora).train()


def main():
    p = argparse.ArgumentParser()
    for k in ("hidden", "ffn", "layers", "heads", "kv-heads", "vocab", "seq", "batch", "threads"):
        p.add_argument("--" + k, type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--adapter", default="none", choices=["none", "lora", "qlora"])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32)
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
    if a.adapter != "none":
        model = with_adapter(model, a, dev)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
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
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def timed_step():
        t0 = time.perf_counter()
        loss = step()
        sync()  # each step drained, as bench_train_step's own
        return (time.perf_counter() - t0) * 1000, loss

    for _ in range(a.warmup):
        timed_step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = []
    for _ in range(a.steps):
        t, loss = timed_step()
        ms.append(t)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    print(torch.__config__.parallel_info(), file=sys.stderr, flush=True)
    print(json.dumps({"step_ms": ms, "loss": loss.item(), "peak_bytes": peak, "threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}), flush=True)


if __name__ == "__main__":
    main()
