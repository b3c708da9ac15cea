"""Loads an agenttune-saved HF folder with transformers (the class its config.json's architectures names) and checks its logits against the ones
agenttune computed (DIR/expect.safetensors). Exit 1 with the max difference on mismatch."""
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

d = sys.argv[1]
exp = load_file(f"{d}/expect.safetensors")
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(input_ids=exp["tokens"].long()).logits
diff = (logits - exp["logits"]).abs().max().item()
print(f"max |logits diff| = {diff:.3g}")
sys.exit(0 if diff <= 1e-4 else 1)
