"""Oracle for tests/train/test_composed_step.cpp: the whole training step in PyTorch.

transformers' LlamaForCausalLM (fp32, eager attention) loaded from the folder agenttune saved,
torch.optim.AdamW (decay on >= 2-D weights only, as agenttune groups them), clip_grad_norm_,
and the loss as the step's token mean over every micro-batch's trained targets. A packed row
(several documents, positions restarting) is run as its documents one by one: that is what
document attention means, computed without any mask.

    step_oracle.py MODEL_DIR BATCHES.safetensors OUT.safetensors

BATCHES holds lrs [S], and per step s and micro-batch m: tokens.s.m, targets.s.m, positions.s.m,
doc_ids.s.m ([B, T] int64). OUT gets loss [S] and grad_norm [S] (float32: our reader takes float weights only).
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

BETAS, EPS, WD, CLIP = (0.9, 0.95), 1e-8, 0.1, 0.5  # CLIP: keep in sync with the C++ test


def documents(tokens, targets, doc_ids):
    """(tokens, targets) of each document of each row, in row order."""
    for r in range(tokens.shape[0]):
        ids = doc_ids[r]
        start = 0
        while start < ids.numel():
            end = start
            while end < ids.numel() and ids[end] == ids[start]:
                end += 1
            yield tokens[r, start:end], targets[r, start:end]
            start = end


def main(model_dir, batches_path, out_path):
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=BETAS, eps=EPS, foreach=False)
    b = load_file(batches_path)
    lrs = b["lrs"]
    losses, norms = [], []
    for s in range(lrs.numel()):
        micro = sorted(int(k.split(".")[2]) for k in b if k.startswith(f"tokens.{s}."))
        docs = [d for m in micro for d in documents(b[f"tokens.{s}.{m}"], b[f"targets.{s}.{m}"], b[f"doc_ids.{s}.{m}"])]
        trained = sum(int((t != -100).sum()) for _, t in docs)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for tok, tgt in docs:
            if int((tgt != -100).sum()) == 0:
                continue
            logits = model(input_ids=tok[None]).logits[0].float()
            loss = F.cross_entropy(logits, tgt, ignore_index=-100, reduction="sum")
            (loss / trained).backward()
            total += float(loss.detach().double())
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP, foreach=False)
        for g in opt.param_groups:
            g["lr"] = float(lrs[s])
        opt.step()
        losses.append(total / trained)
        norms.append(float(norm))
    save_file({"loss": torch.tensor(losses, dtype=torch.float32), "grad_norm": torch.tensor(norms, dtype=torch.float32)},
              out_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
