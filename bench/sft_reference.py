"""The Python baseline for bench_sft_throughput: SFT rendering as a careful script does it.

usage: sft_reference.py --tokenizer-dir D --processes N --out PREFIX FILE.jsonl...
D holds tokenizer.model + tokenizer_config.json (what `agenttune export` writes); it is loaded with
transformers' AutoTokenizer, which in transformers 5 is the tokenizers (Rust) backend converted
from tokenizer.model: no sentencepiece at encode time. Each record ({id, conversations:[{from,
value, loss?}]}) is rendered as llama-2-chat (Meta's format, as agenttune's template): per
(user, assistant) pair BOS + "[INST] {user.strip()} [/INST] {answer.strip()} " + EOS, the stretch
between BOS and EOS tokenized in one call, the mask from the offsets (a token is trained when it
overlaps " {answer} " of a pair with loss != false; that EOS too). A pool of N processes renders
~1 MB chunks of lines (TOKENIZERS_PARALLELISM off: one thread per process, N in all); the main
process writes ids (uint16) and masks to PREFIX.bin / PREFIX.mask in input order. Prints one JSON
line with the time and counts.
"""
import argparse
import json
import multiprocessing as mp
import os
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from jsonl_chunks import chunks

_tok = None


def _init(tok_dir):
    global _tok
    _tok = AutoTokenizer.from_pretrained(tok_dir)


def _ready(_):
    time.sleep(0.2)  # long enough that every worker takes one: all have loaded the tokenizer
    return os.getpid()


def _pairs(turns):
    # human/gpt alternate in the benchmark data; observations are human turns.
    return [(turns[i]["value"], turns[i + 1]["value"], turns[i + 1].get("loss") is not False)
            for i in range(0, len(turns) - 1, 2)]


def _render(lines):
    texts, spans, trained_flags, counts = [], [], [], []
    for line in lines:
        pairs = _pairs(json.loads(line)["conversations"])
        counts.append(len(pairs))
        for user, answer, trained in pairs:
            prompt = "[INST] " + user.strip() + " [/INST]"
            texts.append(prompt + " " + answer.strip() + " ")
            spans.append(len(prompt))
            trained_flags.append(trained)
    enc = _tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    bos, eos = _tok.bos_token_id, _tok.eos_token_id
    ids, mask = [], []
    for tok_ids, offsets, start, trained in zip(enc["input_ids"], enc["offset_mapping"], spans, trained_flags):
        ids.append(bos)
        mask.append(0)
        ids.extend(tok_ids)
        mask.extend(1 if trained and end > start else 0 for _, end in offsets)
        ids.append(eos)
        mask.append(1 if trained else 0)
    return np.asarray(ids, dtype=np.uint16).tobytes(), np.asarray(mask, dtype=np.uint8).tobytes(), len(lines), len(ids), sum(mask)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--processes", type=int, default=mp.cpu_count())
    ap.add_argument("--out", required=True)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    kind = type(AutoTokenizer.from_pretrained(a.tokenizer_dir)).__name__
    convs = tokens = trained = 0
    with mp.Pool(a.processes, initializer=_init, initargs=(a.tokenizer_dir,)) as pool, \
            open(a.out + ".bin", "wb") as out_ids, open(a.out + ".mask", "wb") as out_mask:
        # Loading (converting tokenizer.model) is start-up, not throughput: wait for it untimed.
        pool.map(_ready, range(a.processes), chunksize=1)
        t0 = time.perf_counter()
        for ids, mask, c, t, tr in pool.imap(_render, chunks(a.files)):
            out_ids.write(ids)
            out_mask.write(mask)
            convs, tokens, trained = convs + c, tokens + t, trained + tr
    print(json.dumps({"seconds": time.perf_counter() - t0, "conversations": convs, "tokens": tokens,
                      "trained_tokens": int(trained), "tokenizer": kind}))


if __name__ == "__main__":
    main()
