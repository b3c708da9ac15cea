"""End to end through the CLI, checked by the oracles: `agenttune init` makes the tiny default
model, transformers loads it, and `agenttune generate` (text prompt, real Llama-2 tokenizer)
gives the same prompt ids as Python sentencepiece and the same greedy tokens as transformers.

usage: check_roundtrip.py AGENTTUNE_BIN SCRATCH_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import sentencepiece as spm
import torch
from transformers import LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(os.path.dirname(ROOT), "shared", "fixtures", "llama2-tokenizer.model")


def main():
    binary, scratch = sys.argv[1], sys.argv[2]
    if not os.path.exists(TOKENIZER):
        print(f"SKIP: {TOKENIZER} absent")
        return 0
    shutil.rmtree(scratch, ignore_errors=True)
    model_dir = os.path.join(scratch, "model")
    subprocess.run([binary, "init", "--config", os.path.join(ROOT, "configs/tiny/model.yaml"), "--out", model_dir,
                    "--set", "seed=5"], check=True)
    assert os.path.exists(os.path.join(model_dir, "tokenizer.model")), "init did not copy the tokenizer"

    prompt = "def greet(name):\n    return f'Hello, {name}!'  # ി"
    sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
    want_prompt = [sp.bos_id()] + sp.encode(prompt)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([want_prompt]), max_new_tokens=10, do_sample=False, eos_token_id=2,
                             pad_token_id=0)
    want_new = out[0, len(want_prompt):].tolist()

    res = subprocess.run([binary, "generate", "--model", model_dir, "--prompt", prompt, "--max-new-tokens", "10",
                          "--json"], check=True, capture_output=True, text=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    ok = True
    if got["prompt_ids"] != want_prompt:
        print(f"prompt ids differ:\n ours {got['prompt_ids']}\n sp   {want_prompt}")
        ok = False
    if got["new_ids"] != want_new:
        print(f"greedy tokens differ:\n ours         {got['new_ids']}\n transformers {want_new}")
        ok = False
    print(f"prompt {len(want_prompt)} ids, {len(want_new)} greedy tokens: {'match' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
