"""Oracle for tests/train/test_optimizer.cpp: torch.optim.AdamW and clip_grad_norm_ on seeded data.

Writes one safetensors file (all float32) holding the inputs and the expected results:
    init.<p>, grad.<k>.<p>, lrs         parameters, the grad of step k (0..4), the lr of each step
    ref.<k>.<p>                         params after step k, single-tensor AdamW (foreach=False)
    fused.<k>.<p>                       params after step k, AdamW(fused=True)
    ref.exp_avg.<p>, ref.exp_avg_sq.<p> moments after the last step
    clip.grad.<p>, clip.out.<p>, clip.norm  clip_grad_norm_(max_norm=CLIP_MAX) before/after
Hyper-parameters are fixed here and in the C++ test (keep in sync).
"""
import os
import sys

import torch
from safetensors.torch import save_file

BETAS, EPS, WD, STEPS, CLIP_MAX = (0.9, 0.95), 1e-8, 0.1, 5, 1.0
SHAPES = {"w.matrix": (7, 5), "w.cube": (2, 3, 4), "norm.weight": (6,), "bias": (5,)}


def run(init, grads, lrs, **kw):
    params = {n: t.clone().requires_grad_(True) for n, t in init.items()}
    decay = [p for n, p in params.items() if p.dim() >= 2]
    no_decay = [p for n, p in params.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lrs[0], betas=BETAS, eps=EPS, **kw)
    history = []
    for k, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        for n, p in params.items():
            p.grad = grads[k][n].clone()
        opt.step()
        history.append({n: p.detach().clone() for n, p in params.items()})
    return params, opt, history


def main(out):
    gen = torch.Generator().manual_seed(1234)
    init = {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}
    grads = [{n: torch.randn(s, generator=gen) * 0.1 for n, s in SHAPES.items()} for _ in range(STEPS)]
    lrs_t = torch.tensor([1e-2, 8e-3, 5e-3, 3e-3, 1e-3], dtype=torch.float32)
    lrs = [float(x) for x in lrs_t]
    tensors = {"lrs": lrs_t}
    for n, t in init.items():
        tensors[f"init.{n}"] = t
        for k in range(STEPS):
            tensors[f"grad.{k}.{n}"] = grads[k][n]
    params, opt, ref = run(init, grads, lrs, foreach=False)
    _, _, fused = run(init, grads, lrs, fused=True)
    for k in range(STEPS):
        for n in SHAPES:
            tensors[f"ref.{k}.{n}"] = ref[k][n]
            tensors[f"fused.{k}.{n}"] = fused[k][n]
    for n, p in params.items():
        tensors[f"ref.exp_avg.{n}"] = opt.state[p]["exp_avg"]
        tensors[f"ref.exp_avg_sq.{n}"] = opt.state[p]["exp_avg_sq"]

    clip = {n: (torch.randn(s, generator=gen) * 3).requires_grad_(True) for n, s in SHAPES.items()}
    for n, p in clip.items():
        p.grad = torch.randn(SHAPES[n], generator=gen)
        tensors[f"clip.grad.{n}"] = p.grad.clone()
    norm = torch.nn.utils.clip_grad_norm_(list(clip.values()), CLIP_MAX)
    tensors["clip.norm"] = norm.reshape(1)
    for n, p in clip.items():
        tensors[f"clip.out.{n}"] = p.grad.clone()
    # Parallel test processes may race to create the file: write aside, then rename into place.
    tmp = f"{out}.tmp.{os.getpid()}"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1])
