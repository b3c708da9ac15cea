"""Oracle for tests/data: the ids Python sentencepiece gives each document, as prepare stores them.

usage: sp_reference.py MODEL TEXTS.json OUT.json
TEXTS.json is a JSON list of strings; OUT.json gets a list of [BOS] + sp.encode(text) + [EOS].
"""
import json
import sys

import sentencepiece as spm


def main() -> None:
    model, src, dst = sys.argv[1:4]
    sp = spm.SentencePieceProcessor(model_file=model)
    with open(src, encoding="utf-8") as f:
        texts = json.load(f)
    out = [[sp.bos_id()] + sp.encode(t) + [sp.eos_id()] for t in texts]
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
