"""PEFT as the oracle for our adapters (driven by tests/cli/test_lora_export.cpp).

usage:
  peft_oracle.py make BASE OUT RANK ALPHA RSLORA TARGETS SEED [IDS N]
      a LoRA adapter written by peft's own save_pretrained over the model folder BASE (A and B both
      random, init_lora_weights=False, so the adapter changes the model); TARGETS comma-separated.
      With IDS (comma-separated) and N: also transformers + peft's greedy continuation of IDS by N
      new tokens with the adapter as saved (PeftModel.from_pretrained)
  peft_oracle.py same-as-peft BASE ADAPTER
      the folder ADAPTER (ours) against what peft itself saves for the same LoraConfig over BASE:
      the same tensor names, shapes and dtypes, and the same adapter_config.json keys and values
  peft_oracle.py merged BASE ADAPTER MERGED
      logits of the model folder MERGED (our merged export) against peft's
      PeftModel.from_pretrained(BASE, ADAPTER).merge_and_unload(), and the merged weights
Each prints one JSON line; a failed check exits 1 naming what differs.
"""
import json
import os
import sys
import tempfile
import warnings

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import LlamaForCausalLM

warnings.filterwarnings("ignore")


def base_model(path):
    return LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def probe(model):
    gen = torch.Generator().manual_seed(3)
    return torch.randint(0, model.config.vocab_size, (2, 24), generator=gen)


def make(base, out, rank, alpha, rslora, targets, seed, ids=None, n=None):
    torch.manual_seed(int(seed))
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha) if "." in alpha else int(alpha), lora_dropout=0.0,
                        target_modules=targets.split(","), use_rslora=rslora == "1", init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(base_model(base), config).save_pretrained(out)
    result = {"written": out}
    if ids:
        model = PeftModel.from_pretrained(base_model(base), out).eval()
        prompt = torch.tensor([[int(i) for i in ids.split(",")]])
        with torch.no_grad():
            gen = model.generate(input_ids=prompt, max_new_tokens=int(n), do_sample=False, eos_token_id=2,
                                 pad_token_id=0)
        result["new_ids"] = gen[0, prompt.shape[1]:].tolist()
    print(json.dumps(result))
    return 0


def tensor_table(folder):
    with safe_open(os.path.join(folder, "adapter_model.safetensors"), "pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def same_as_peft(base, adapter):
    ours_config = json.load(open(os.path.join(adapter, "adapter_config.json")))
    config = LoraConfig(r=ours_config["r"], lora_alpha=ours_config["lora_alpha"],
                        lora_dropout=ours_config["lora_dropout"], target_modules=ours_config["target_modules"],
                        use_rslora=ours_config["use_rslora"], task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as tmp:
        get_peft_model(base_model(base), config).save_pretrained(tmp)
        theirs_config = json.load(open(os.path.join(tmp, "adapter_config.json")))
        theirs = tensor_table(tmp)
    ours = tensor_table(adapter)
    problems = []
    if ours != theirs:
        problems.append(f"tensors: only ours {sorted(set(ours) - set(theirs))[:3]}, only peft's "
                        f"{sorted(set(theirs) - set(ours))[:3]}, differing "
                        f"{[(k, ours[k], theirs[k]) for k in ours if k in theirs and ours[k] != theirs[k]][:3]}")
    if set(ours_config) != set(theirs_config):
        problems.append(f"config keys: only ours {sorted(set(ours_config) - set(theirs_config))}, only peft's "
                        f"{sorted(set(theirs_config) - set(ours_config))}")
    for key in theirs_config:
        a, b = ours_config.get(key), theirs_config[key]
        if key == "target_modules":
            a, b = sorted(a), sorted(b)
        if key != "base_model_name_or_path" and (a != b or type(a) is not type(b)):
            problems.append(f"config {key}: ours {a!r}, peft's {b!r}")
    print(json.dumps({"tensors": len(ours), "config_keys": len(ours_config), "problems": problems}))
    return 1 if problems else 0


def merged(base, adapter, merged_dir):
    plain = base_model(base)
    ours = base_model(merged_dir)
    tokens = probe(ours)
    with torch.no_grad():
        base_logits = plain(input_ids=tokens).logits
    peft_merged = PeftModel.from_pretrained(plain, adapter).merge_and_unload().eval()
    with torch.no_grad():
        want = peft_merged(input_ids=tokens).logits
        got = ours(input_ids=tokens).logits
    rel = ((got - want).abs().max() / want.abs().max()).item()
    theirs_w = dict(peft_merged.named_parameters())
    weight_rel = max(((p - theirs_w[n]).abs().max() / theirs_w[n].abs().max()).item()
                     for n, p in ours.named_parameters())
    # How far the adapter moved the model: a check against an unchanged base would prove nothing.
    moved = ((want - base_logits).abs().max() / want.abs().max()).item()
    print(json.dumps({"logits_max_rel_diff": rel, "weights_max_rel_diff": weight_rel,
                      "max_abs_logit": want.abs().max().item(), "adapter_moved_logits_rel": moved}))
    return 0 if rel <= 1e-5 and weight_rel <= 1e-6 else 1


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    return {"make": make, "same-as-peft": same_as_peft, "merged": merged}[cmd](*args)


if __name__ == "__main__":
    sys.exit(main())
