"""The Python baseline for bench_prepare_throughput: what a careful script does with sentencepiece,
or with Hugging Face `tokenizers` for a tokenizer.json.

usage: prepare_reference.py --model M --processes N --out OUT.bin FILE.jsonl...
       prepare_reference.py --tokenizer-json T --bos ID --eos ID --processes N --out OUT.bin FILE.jsonl...
SentencePiece: the main process reads lines in ~1 MB chunks; a multiprocessing pool of N processes
parses the JSON and encodes each chunk (one sentencepiece call per chunk, BOS/EOS per document) into
uint16 bytes; the main process writes them to OUT.bin in input order.
tokenizer.json: one process, each ~1 MB chunk through tokenizers' encode_batch_fast, which runs on N
threads of its own (RAYON_NUM_THREADS), BOS (when >= 0) and EOS per document, uint32 out.
Prints one JSON line with the time.
"""
import os
import argparse
import itertools
import json
import multiprocessing as mp
import sys
import time

import numpy as np
import sentencepiece as spm

from jsonl_chunks import chunks

_sp = None


def _init(model):
    global _sp
    _sp = spm.SentencePieceProcessor(model_file=model)


def _encode(lines):
    texts = [json.loads(line)["text"] for line in lines]
    bos, eos = _sp.bos_id(), _sp.eos_id()
    ids = _sp.encode(texts, num_threads=1)  # one thread per process: N processes in all
    flat = list(itertools.chain.from_iterable([bos] + x + [eos] for x in ids))
    return np.asarray(flat, dtype=np.uint16).tobytes(), len(flat)


def tokenizers_reference(a):
    os.environ["RAYON_NUM_THREADS"] = str(a.processes)  # read when tokenizers first starts its pool
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(a.tokenizer_json)
    t0 = time.perf_counter()
    tokens = 0
    head = [a.bos] if a.bos >= 0 else []
    with open(a.out, "wb") as out:
        for lines in chunks(a.files):
            texts = [json.loads(line)["text"] for line in lines]
            encs = tok.encode_batch_fast(texts, add_special_tokens=False)
            flat = list(itertools.chain.from_iterable(head + e.ids + [a.eos] for e in encs))
            out.write(np.asarray(flat, dtype=np.uint32).tobytes())
            tokens += len(flat)
    return time.perf_counter() - t0, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--tokenizer-json")
    ap.add_argument("--bos", type=int, default=-1)
    ap.add_argument("--eos", type=int, default=-1)
    ap.add_argument("--processes", type=int, default=mp.cpu_count())
    ap.add_argument("--out", required=True)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    if a.tokenizer_json:
        seconds, tokens = tokenizers_reference(a)
        print(json.dumps({"seconds": seconds, "tokens": tokens}))
        return
    t0 = time.perf_counter()
    tokens = 0
    with mp.Pool(a.processes, initializer=_init, initargs=(a.model,)) as pool, open(a.out, "wb") as out:
        for data, n in pool.imap(_encode, chunks(a.files)):
            out.write(data)
            tokens += n
    print(json.dumps({"seconds": time.perf_counter() - t0, "tokens": tokens}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
