"""The Python baseline for bench_prepare_throughput: what a careful script does with sentencepiece.

usage: prepare_reference.py --model M --processes N --out OUT.bin FILE.jsonl...
The main process reads lines in ~1 MB chunks; a multiprocessing pool of N processes parses the
JSON and encodes each chunk (one sentencepiece call per chunk, BOS/EOS per document) into uint16
bytes; the main process writes them to OUT.bin in input order. Prints one JSON line with the time.
"""
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--processes", type=int, default=mp.cpu_count())
    ap.add_argument("--out", required=True)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
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
