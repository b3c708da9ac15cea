"""Oracle for tests/tokenizer: encodes each JSON string of INPUT with Python sentencepiece.

usage: sp_encode.py MODEL INPUT.jsonl OUTPUT.jsonl
Each input line is a JSON string; each output line is {"ids": [...], "decoded": "..."}.
"""
import json
import sys

import sentencepiece as spm


def main() -> None:
    model, src, dst = sys.argv[1:4]
    sp = spm.SentencePieceProcessor(model_file=model)
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            text = json.loads(line)
            ids = sp.encode(text)
            fout.write(json.dumps({"ids": ids, "decoded": sp.decode(ids)}) + "\n")


if __name__ == "__main__":
    main()
