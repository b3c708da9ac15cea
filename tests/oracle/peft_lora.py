"""Oracle fixtures for tests/model/test_lora.cpp: PEFT LoRA on make_models.py's models.

usage: peft_lora.py ORACLE_MODELS_DIR OUT_DIR
For each variant in VARIANTS: the case's transformers model (fp32, eager attention) wrapped by
peft's get_peft_model (all seven targets, dropout 0 unless the variant says; A drawn as agenttune draws it, see
peft_init.py), then B set to random non-zero values (so the adapter changes the output and A gets
a gradient). On the case's tokens and labels it writes OUT_DIR/<variant>/ref.safetensors:
  init.<ours>.lora_A   A as agenttune must draw it      set.<ours>.lora_B  the B values used
  logits, loss         forward with the adapters         grad.<ours>.lora_{A,B}  every adapter grad
  merged_logits        logits of merge_and_unload()
and OUT_DIR/variants.json with each variant's case, rank, alpha, rslora, init_seed (and dropout,
rng_seed: the CPU generator's seed before the forward).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from peft_init import adapter_params, peft_model

VARIANTS = {
    "lora_mha": dict(case="mha_untied", rank=8, alpha=16.0, rslora=False, init_seed=3),
    "lora_gqa": dict(case="gqa_odd_vocab_sharded", rank=4, alpha=8.0, rslora=False, init_seed=11),
    "rslora_gqa": dict(case="gqa_odd_vocab_sharded", rank=16, alpha=6.0, rslora=True, init_seed=5),
    # Dropout draws from the default CPU generator in forward order (q, k, v, o, gate, up, down per
    # layer) in both, so seeding it alike (torch.manual_seed(rng_seed)) gives the same masks.
    "dropout_mha": dict(case="mha_untied", rank=8, alpha=16.0, rslora=False, init_seed=7, dropout=0.25, rng_seed=1234),
    # Projections with a bias (Qwen2.5's q/k/v): PEFT keeps the base bias frozen and adds the
    # adapter's delta to the biased output; Qwen3's q/k norms sit between the adapters and RoPE.
    "lora_qwen2": dict(case="qwen2_biases", rank=4, alpha=8.0, rslora=False, init_seed=13),
    "lora_qwen3": dict(case="qwen3_qk_norm_tied", rank=4, alpha=8.0, rslora=False, init_seed=17),
}


def make_variant(name, v, models, out_root):
    case = os.path.join(models, v["case"])
    base = AutoModelForCausalLM.from_pretrained(os.path.join(case, "model"), dtype=torch.float32,
                                            attn_implementation="eager")
    model = peft_model(base, v["rank"], v["alpha"], v["rslora"], v["init_seed"], v.get("dropout", 0.0))
    ref = {}
    params = adapter_params(model)
    g = torch.Generator().manual_seed(1000 + v["init_seed"])
    with torch.no_grad():
        for n, p in params.items():
            if n.endswith(".lora_A"):
                ref["init." + n] = p.detach().clone()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
                ref["set." + n] = p.detach().clone()
    inputs = load_file(os.path.join(case, "ref.safetensors"))
    tokens, labels = inputs["tokens"].long(), inputs["labels"].long()
    model.train()
    torch.manual_seed(v.get("rng_seed", 0))
    out = model(input_ids=tokens, labels=labels)
    out.loss.backward()
    ref["logits"] = out.logits.detach().float().contiguous()
    ref["loss"] = out.loss.detach().reshape(1)
    frozen = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert not frozen, f"PEFT left base parameters trainable: {frozen[:3]}"
    for n, p in params.items():
        ref["grad." + n] = p.grad.detach().contiguous()
    merged = model.merge_and_unload()
    merged.eval()
    with torch.no_grad():
        ref["merged_logits"] = merged(input_ids=tokens).logits.float().contiguous()
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    save_file(ref, os.path.join(d, "ref.safetensors"))


def main():
    models, out_root = sys.argv[1], sys.argv[2]
    os.makedirs(out_root, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    for name, v in VARIANTS.items():
        make_variant(name, v, models, out_root)
    with open(os.path.join(out_root, "variants.json"), "w") as f:
        json.dump(VARIANTS, f, indent=1)


if __name__ == "__main__":
    main()
