"""Greedy decoding of an exported model folder as a transformers user runs it: AutoTokenizer and
AutoModelForCausalLM from the folder's own files (float32), the prompt encoded with the tokenizer's
special tokens (Llama-3's BOS from its post-processor, none for Qwen), generation stopping at the
folder's generation_config.json eos_token_id (one id or a list).

usage: family_generate_oracle.py FOLDER PROMPT MAX_NEW_TOKENS
prints {"prompt_ids": [...], "new_ids": [...], "eos_token_id": ...} as one JSON line."""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, prompt, max_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
ids = tok(prompt, return_tensors="pt")["input_ids"]
eos = model.generation_config.eos_token_id
with torch.no_grad():
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=eos, pad_token_id=eos[0] if isinstance(eos, list) else eos)
print(json.dumps({"prompt_ids": ids[0].tolist(), "new_ids": out[0, ids.shape[1]:].tolist(), "eos_token_id": eos}))
