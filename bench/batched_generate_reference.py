"""The transformers reference for bench_batched_generate: batched greedy `generate` with left padding,
as a transformers user decodes many prompts at once on the CPU.

bench_batched_generate starts it in its own process after its own runs. It loads the model folder
(fp32, SDPA attention), reads the prompts (a JSON list of token-id lists), batches them exactly as
agenttune's generate_batch does (longest first, --batch per batch, left padding with id 0 and an
attention mask), decodes --max-new tokens per row with no stop id (every row runs to the end, as
in the agenttune run), once to warm up and then --runs timed times, and prints one JSON line:
{"seconds": [...], "new_tokens": N, "tokens": [[...], ...] (per prompt, in the given order),
"threads": T}.

usage: batched_generate_reference.py --model DIR --prompts FILE --batch B --max-new N --runs R --threads T
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def decode_all(model, prompts, batch, max_new):
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = [None] * len(prompts)
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        width = max(len(prompts[i]) for i in rows)
        ids = torch.tensor([[0] * (width - len(prompts[i])) + prompts[i] for i in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in rows], dtype=torch.long)
        with torch.inference_mode():
            got = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, min_new_tokens=max_new,
                                 do_sample=False, pad_token_id=0)
        for k, i in enumerate(rows):
            out[i] = got[k, width:].tolist()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--max-new", type=int, required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="sdpa").eval()
    # No stop: every row decodes --max-new tokens, the work agenttune's run does.
    model.generation_config.eos_token_id = None
    with open(a.prompts) as f:
        prompts = json.load(f)
    tokens = decode_all(model, prompts, a.batch, a.max_new)  # warm-up
    seconds = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        tokens = decode_all(model, prompts, a.batch, a.max_new)
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": seconds, "new_tokens": sum(len(t) for t in tokens), "tokens": tokens,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
