"""Oracle for tests/train/test_lora_peft_steps.cpp: LoRA training steps in PEFT + PyTorch.

transformers' LlamaForCausalLM (fp32, eager attention) from the folder agenttune saved, wrapped by
peft's get_peft_model with the run's adapter (A drawn as agenttune draws it, B zero: peft_init.py),
trained with torch.optim.AdamW (one group: every trainable tensor is a 2-D adapter matrix, all
decayed, as agenttune's decay group), clip_grad_norm_, and the step loss as the token mean over
every micro-batch's trained targets.

    peft_steps.py MODEL_DIR RUN.json BATCHES.safetensors OUT.safetensors

RUN.json: rank, alpha, rslora, init_seed, targets, lrs [S], betas, eps, weight_decay, clip.
BATCHES: per step s and micro-batch m, tokens.s.m and targets.s.m ([B, T] int64, targets already
the next token, -100 = not trained). OUT: loss [S], grad_norm [S] (before clipping), grad.s.<ours>
(every adapter gradient of step s, before clipping) and final.<ours> (the adapters after the last
step); <ours> is agenttune's parameter name, e.g. model.layers.0.mlp.up_proj.lora_B.
"""
import json
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from peft_init import adapter_params, peft_model


def main(model_dir, run_path, batches_path, out_path):
    torch.use_deterministic_algorithms(True)
    with open(run_path) as f:
        run = json.load(f)
    base = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model = peft_model(base, run["rank"], run["alpha"], run["rslora"], run["init_seed"], targets=run["targets"])
    model.train()
    params = adapter_params(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == len(params), "PEFT trains something besides the adapters"
    opt = torch.optim.AdamW(trainable, lr=1e-3, betas=tuple(run["betas"]), eps=run["eps"],
                            weight_decay=run["weight_decay"], foreach=False)
    b = load_file(batches_path)
    out, losses, norms = {}, [], []
    for s, lr in enumerate(run["lrs"]):
        micro = sorted(int(k.split(".")[2]) for k in b if k.startswith(f"tokens.{s}."))
        trained = sum(int((b[f"targets.{s}.{m}"] != -100).sum()) for m in micro)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for m in micro:
            tokens, targets = b[f"tokens.{s}.{m}"], b[f"targets.{s}.{m}"]
            logits = model(input_ids=tokens).logits.float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                                   reduction="sum")
            (loss / trained).backward()
            total += float(loss.detach().double())
        for n, p in params.items():
            out[f"grad.{s}.{n}"] = p.grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(trainable, run["clip"], foreach=False)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        losses.append(total / trained)
        norms.append(float(norm))
    for n, p in params.items():
        out["final." + n] = p.detach().clone()
    out["loss"] = torch.tensor(losses, dtype=torch.float32)
    out["grad_norm"] = torch.tensor(norms, dtype=torch.float32)
    save_file(out, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:5])
